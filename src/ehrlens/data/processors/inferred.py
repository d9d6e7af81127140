"""The processor that reads a bare batch tensor, for features no processor was fitted for.

Models built from a schema have a fitted processor per feature. Others (a Hugging Face
encoder's ``input_ids``, a third-party model's tensors) are read by dtype and rank: integer
tensors hold code ids (``[batch, seq]``, or ``[batch, visits, codes]`` for rank 3); float
tensors are time series (rank 3, with an optional step mask) or vectors.

Example:
    >>> input_ids = torch.tensor([[101, 7592, 102, 0]])   # a tokenizer's ids, 0 = padding
    >>> processor = processor_for_tensor(input_ids, pad_id=0)
    >>> processor.unit_mask(input_ids)          # True where the id is not the pad id
    tensor([[ True,  True,  True, False]])
"""

from __future__ import annotations

from torch import Tensor

from .base import PAD_ID, FeatureProcessor
from .codes import NestedSequenceProcessor, SequenceProcessor
from .numeric import TensorProcessor, TimeseriesProcessor


def processor_for_tensor(values: Tensor, pad_id: int | None = PAD_ID) -> FeatureProcessor:
    """An unfitted built-in processor whose masks and score layout fit ``values``.

    Only the layout methods (:meth:`~FeatureProcessor.unit_mask`,
    :meth:`~FeatureProcessor.position_mask`, :meth:`~FeatureProcessor.scores_to_inputs`,
    :meth:`~FeatureProcessor.remove_units`) are meaningful on it.

    Args:
        values: the batch tensor ``[batch, ...]``.
        pad_id: the padding id of integer tensors; ``None``: every id is real.
    """
    if values.is_floating_point():
        return TimeseriesProcessor() if values.dim() == 3 else TensorProcessor()
    processor = NestedSequenceProcessor() if values.dim() == 3 else SequenceProcessor()
    processor.pad_id = pad_id
    return processor

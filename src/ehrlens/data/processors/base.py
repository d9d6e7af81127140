"""The processor contract: everything the library needs to know about one input type.

A :class:`FeatureProcessor` subclass is the one place that knows its input type. Besides
fitting and converting samples it answers, for its batch tensor ``values`` ``[batch, ...]``:

============================  ==============================================================
``input_rank``                rank of ``values`` (batch dim included)
``holds_codes``, ``decode``   whether ``values`` are code ids, and their codes
``unit_embedding(dim)``       the module embedding each input unit on its own
``embed_units``, ``pool_units``  units -> ``[batch, *units, D]`` -> one token per attention
                              position ``[batch, seq, D]`` (nested visits: mean over codes)
``unit_mask``                 True at real units (not padding), shaped like ``values``
``position_mask``             True at real attention positions, ``[batch, seq]``
``scores_to_inputs``          per-position scores ``[batch, seq]`` spread onto ``values``
``remove_units``              removal for faithfulness metrics (codes -> pad id, numbers ->
                              zero or batch mean)
``long_units``                one sample's ``(visit, position, code, index)`` rows of the
                              attribution table
``from_events``, ``to_events``  event-table rows <-> one sample's value
============================  ==============================================================

Processors are found by their ``schema`` string in one registry
(:func:`~ehrlens.data.processors.register_processor`).

Example:
    >>> from ehrlens.data.processors import make_feature_processor
    >>> proc = make_feature_processor("nested_sequence", "diagnoses")
    >>> proc.fit([[["I10"], ["I10", "E11"]]], key="diagnoses")
    >>> values = proc.collate([proc.process([["E11"], ["I10", "Z99"]], "diagnoses")]).values
    >>> proc.unit_mask(values)                 # [1, visits=2, codes=2]
    tensor([[[ True, False], [ True,  True]]])
    >>> proc.scores_to_inputs("diagnoses", torch.tensor([[0.25, 0.75]]), values)
    tensor([[[0.2500, 0.0000], [0.7500, 0.7500]]])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

PAD_ID = 0
UNK_ID = 1
SPECIAL_TOKENS = ("<pad>", "<unk>")
#: Codes that name the special ids; refused in data.
RESERVED_CODES = frozenset(SPECIAL_TOKENS)

#: How removed numeric units are replaced: by zero or by their channel's batch mean.
Ablation = Literal["zero", "mean"]
#: One row of the attribution table for one unit: ``(visit, position, code, index)``, where
#: ``index`` indexes the unit in the sample's tensor (``values[index]``).
LongUnit = tuple[int | None, int, str, tuple[int, ...]]
#: One event-table row written by :meth:`FeatureProcessor.to_events`:
#: ``(visit_id, time, code, value)`` (``visit_id`` may be ``None``, ``value`` NaN for codes).
EventRow = tuple[str | None, float, str, float]


@dataclass
class CollatedFeature:
    """One feature of a batch: padded values, plus a step mask / step times where needed.

    Attributes:
        values: padded values, e.g. ``[batch, seq]`` codes or ``[batch, steps, features]``.
        mask: ``[batch, steps]`` validity, only for float features whose values cannot tell
            padding apart (``"timeseries"``); ``None`` where validity follows from the values.
        times: ``[batch, steps]`` time of each step (``"timeseries"``, ``"stagenet"``).
    """

    values: Tensor
    mask: Tensor | None = None
    times: Tensor | None = None


@dataclass
class EventRows:
    """The event-table rows of one feature of one patient, with the patient's visits.

    Attributes:
        key: the feature key.
        patient_id: the patient.
        rows: a pandas DataFrame with columns ``row`` (0-based row of the table), ``visit``,
            ``time``, ``code`` and ``value``, ordered by time, then row.
        visits: the patient's visit keys in order (visits of every code feature, so nested
            features of one patient line up).
        visit_times: visit key -> time of its earliest event.
        start: the patient's time origin (first event for dates, else 0).
        names: measurement names in column order (``event_kind == "measurements"``).
    """

    key: str
    patient_id: str
    rows: Any
    visits: list
    visit_times: Mapping[Any, float]
    start: float
    names: list[str] | None = None


def pad_stack(tensors: Sequence[Tensor], dtype: torch.dtype, value: float = 0) -> Tensor:
    """Pad tensors of equal rank to the largest size in every dim and stack them."""
    rank = tensors[0].dim()
    shape = [max(t.shape[d] for t in tensors) for d in range(rank)]
    out = torch.full((len(tensors), *shape), value, dtype=dtype)
    for i, t in enumerate(tensors):
        region: tuple[int | slice, ...] = (i, *(slice(0, s) for s in t.shape))
        out[region] = t
    return out


def check_max_length(max_length: Any, key: str | None = None) -> int | None:
    """``max_length`` if it is ``None`` or an int >= 1, else a ValueError naming ``key``."""
    if max_length is None:
        return None
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        at = "max_length" if key is None else f"feature '{key}': max_length"
        raise ValueError(f"{at} must be None or an int >= 1, got {max_length!r}")
    return max_length


class TruncationWarning(UserWarning):
    """Samples longer than a processor's ``max_length`` were cut to their last steps.

    Issued by :func:`~ehrlens.data.create_sample_dataset` once per feature key, with the
    number of samples truncated; the counts are also in ``SampleDataset.truncated``.
    """


class Processor(ABC):
    """Base class of every processor: fit, convert one value, and (de)serialise state."""

    schema: ClassVar[str]

    @abstractmethod
    def fit(self, values: Sequence[Any], key: str) -> None:
        """Learn what the processor needs (vocabulary, label map) from all samples' values."""

    @abstractmethod
    def process(self, value: Any, key: str, index: int | None = None) -> Any:
        """Validate and convert one sample's value; errors name ``index`` and ``key``."""

    def state_dict(self) -> dict[str, Any]:
        """Fitted state as plain Python values (saved with a model)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict`."""
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


class LabelProcessor(Processor):
    """Processor of a label; ``output_size`` is the width of the model's logit."""

    @property
    @abstractmethod
    def output_size(self) -> int:
        """Number of logits the model must produce for this label."""

    @property
    def class_names(self) -> list[str] | None:
        """Class names in the order of the model's outputs (binary: ``[negative, positive]``);
        ``None`` for a label without classes (regression) or before :meth:`fit`."""
        return None

    def collate(self, items: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(items))


class FeatureProcessor(Processor):
    """Processor of an input feature: conversion, and everything the library asks of its type.

    Subclasses implement :meth:`fit`, :meth:`process`, :meth:`collate`,
    :meth:`unit_embedding`, :meth:`unit_mask`, :meth:`remove_units` and :meth:`long_units`;
    the rest has defaults for a batch tensor whose first two dims are ``[batch, seq]`` (one
    attention position per element of ``seq``, each holding ``values[b, s, ...]``).
    """

    #: True when the padded values are integer code ids (:meth:`decode` gives their codes).
    holds_codes: ClassVar[bool] = False
    #: True for features ordered in time, which ``max_length`` can truncate.
    supports_max_length: ClassVar[bool] = False
    #: True when batches carry a step mask ``masks[key]`` that the values cannot replace.
    needs_step_mask: ClassVar[bool] = False
    #: How event-table rows build the feature: ``"codes"`` (from the ``code`` column),
    #: ``"measurements"`` (``code`` names a measurement, ``value`` holds it) or ``None``.
    event_kind: ClassVar[Literal["codes", "measurements"] | None] = None
    #: Longest number of steps (codes, visits, time steps) kept per sample; ``None`` keeps all.
    max_length: int | None = None
    #: Samples this processor has truncated in :meth:`process` since it was created.
    truncated_samples: int = 0

    @property
    def is_token_feature(self) -> bool:
        """The same as :attr:`holds_codes` (earlier name)."""
        return self.holds_codes

    # ------------------------------------------------------------------ conversion
    @abstractmethod
    def collate(self, items: Sequence[Any]) -> CollatedFeature:
        """Pad a list of processed values to the longest item."""

    def _keep_last(self, steps: list, count: bool = True) -> list:
        """The last ``max_length`` steps (the most recent ones); counts a truncated sample."""
        if self.max_length is None or len(steps) <= self.max_length:
            return steps
        if count:
            self.truncated_samples += 1
        return steps[len(steps) - self.max_length :]

    # ------------------------------------------------------------------ the batch tensor
    @property
    def input_rank(self) -> int:
        """Rank of the batch tensor ``[batch, ...]``: 2 unless a subclass says otherwise."""
        return 2

    def check_input(self, key: str, values: Any) -> None:
        """Refuse a batch tensor of the wrong kind (not a tensor, wrong rank, float codes)."""
        if not isinstance(values, Tensor):
            raise TypeError(f"feature '{key}': expected a tensor, got {type(values).__name__}")
        if values.dim() != self.input_rank:
            raise ValueError(
                f"feature '{key}': expected a tensor of rank {self.input_rank} "
                f"([batch, ...]) for schema '{self.schema}', got shape {tuple(values.shape)}"
            )
        if self.holds_codes and (
            values.is_floating_point() or values.is_complex() or values.dtype == torch.bool
        ):
            raise TypeError(
                f"feature '{key}': code ids must be an integer tensor, got {values.dtype}"
            )

    def decode(self, ids: Sequence[int]) -> list[str]:
        """The codes of ``ids`` (only for processors that hold codes)."""
        raise TypeError(f"schema '{self.schema}' holds no code ids to decode")

    # ------------------------------------------------------------------ embedding
    @abstractmethod
    def unit_embedding(self, dim: int) -> nn.Module:
        """A new module embedding every input unit on its own: its output is
        ``[batch, *unit_positions, dim]``, what gradient methods attribute to."""

    def embed_units(self, key: str, unit: nn.Module, values: Tensor) -> Tensor:
        """``unit`` (from :meth:`unit_embedding`) applied to ``values``."""
        return unit(values)

    def pool_units(self, embedded: Tensor, values: Tensor) -> Tensor:
        """Unit embeddings -> one token per attention position ``[batch, seq, dim]``."""
        return embedded

    # ------------------------------------------------------------------ real units
    @abstractmethod
    def unit_mask(self, values: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """``bool`` shaped like ``values``: True at real units, False at padding.

        ``step_mask`` is the batch's ``masks[key]`` (``[batch, steps]``), where it has one.
        """

    def position_mask(self, values: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """``[batch, seq]`` True at attention positions holding at least one real unit."""
        real = self.unit_mask(values, step_mask)
        if real.dim() <= 2:
            return real
        return real.flatten(start_dim=2).any(dim=-1)

    def scores_to_inputs(
        self, key: str, scores: Tensor, values: Tensor, step_mask: Tensor | None = None
    ) -> Tensor:
        """Spread scores over the raw input: shaped like ``values``, padding exactly 0.

        ``scores`` are per attention position ``[batch, seq]`` (each position's score goes on
        every unit it holds), or per unit with the leading dims of ``values``.
        """
        if scores.dim() == 0 or tuple(scores.shape) != tuple(values.shape[: scores.dim()]):
            raise ValueError(
                f"feature '{key}': relevance shape {tuple(scores.shape)} does not match the "
                f"input positions {tuple(values.shape[:2])} of the batch tensor "
                f"{tuple(values.shape)}"
            )
        spread = scores.reshape(*scores.shape, *(1,) * (values.dim() - scores.dim()))
        return spread * self.unit_mask(values, step_mask)

    @abstractmethod
    def remove_units(
        self,
        values: Tensor,
        flags: Tensor,
        ablation: Ablation = "zero",
        step_mask: Tensor | None = None,
    ) -> Tensor:
        """A copy of ``values`` with the units flagged in ``flags`` (shaped like ``values``)
        removed, the way the type allows; the dtype is kept."""

    # ------------------------------------------------------------------ attribution table
    @abstractmethod
    def long_units(self, values: Tensor, step_mask: Tensor | None = None) -> Iterator[LongUnit]:
        """One sample's real units as ``(visit, position, code, index)``, padding left out.

        ``values`` is the sample's tensor (``batch[key][i]``, on the CPU), ``step_mask`` its
        row of ``masks[key]``.
        """

    # ------------------------------------------------------------------ event tables
    def from_events(self, events: EventRows) -> Any:
        """One patient's sample value built from its event-table rows."""
        raise ValueError(f"feature '{events.key}': schema {self.schema!r} has no event form")

    def to_events(
        self, value: Any, key: str, patient_id: str, names: Sequence[str] | None = None
    ) -> Iterable[EventRow]:
        """The event-table rows ``(visit_id, time, code, value)`` of one sample's value;
        :meth:`from_events` reads them back to the same value."""
        raise ValueError(f"feature '{key}': schema {self.schema!r} has no event form")

    def event_steps(self, events: EventRows) -> list[tuple[Any, float]] | None:
        """Each step of :meth:`from_events`'s value as ``(visit key or None, time)``, in
        order; ``None`` for a value without steps. Readers turn this into the steps' original
        ``visit_id`` and event time, which attribution rows carry."""
        return None

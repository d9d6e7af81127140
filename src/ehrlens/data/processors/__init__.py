"""Processors turn one field of a patient sample into tensors: one class per schema string.

A processor is fitted once on a dataset (vocabularies, label maps), then converts each sample's
value and pads a list of converted values into a batch. Its fitted state is a plain dict so a
trained model can carry it and score new patients with the same vocabulary. An input
processor also owns everything the rest of the library needs to know about its input type
(see :class:`FeatureProcessor`): embedding, real units, score layout, removal, the attribution
table's units and the event-table form.

Schema strings (the registry, :func:`register_processor`)
-----------------------------------------------------------
Inputs: ``"sequence"``, ``"nested_sequence"``, ``"timeseries"``, ``"stagenet"``, ``"tensor"``.
Outputs: ``"binary"``, ``"multiclass"``, ``"multilabel"``, ``"regression"``.

Example:
    >>> proc = SequenceProcessor()
    >>> proc.fit([["I10", "E11.9"], ["I10"]], key="conditions")
    >>> proc.process(["E11.9", "Z99"], key="conditions", index=0)   # Z99 is unseen -> 1
    tensor([2, 1])
"""

from .base import (
    PAD_ID,
    RESERVED_CODES,
    UNK_ID,
    Ablation,
    CollatedFeature,
    EventRow,
    EventRows,
    FeatureProcessor,
    LabelProcessor,
    LongUnit,
    Processor,
    TruncationWarning,
    check_max_length,
    pad_stack,
)
from .codes import (
    CodeProcessor,
    NestedSequenceProcessor,
    SequenceProcessor,
    StageNetProcessor,
    Vocabulary,
)
from .inferred import processor_for_tensor
from .labels import (
    BinaryLabelProcessor,
    MulticlassLabelProcessor,
    MultilabelLabelProcessor,
    RegressionLabelProcessor,
)
from .numeric import ElementwiseEmbedding, TensorProcessor, TimeseriesProcessor, ablate_numbers
from .registry import (
    FEATURE_PROCESSORS,
    LABEL_PROCESSORS,
    feature_processor_class,
    make_feature_processor,
    make_label_processor,
    register_processor,
    unregister_processor,
)

__all__ = [
    "FEATURE_PROCESSORS",
    "LABEL_PROCESSORS",
    "PAD_ID",
    "RESERVED_CODES",
    "UNK_ID",
    "Ablation",
    "BinaryLabelProcessor",
    "CodeProcessor",
    "CollatedFeature",
    "ElementwiseEmbedding",
    "EventRow",
    "EventRows",
    "FeatureProcessor",
    "LabelProcessor",
    "LongUnit",
    "MulticlassLabelProcessor",
    "MultilabelLabelProcessor",
    "NestedSequenceProcessor",
    "Processor",
    "RegressionLabelProcessor",
    "SequenceProcessor",
    "StageNetProcessor",
    "TensorProcessor",
    "TimeseriesProcessor",
    "TruncationWarning",
    "Vocabulary",
    "ablate_numbers",
    "check_max_length",
    "feature_processor_class",
    "make_feature_processor",
    "make_label_processor",
    "pad_stack",
    "processor_for_tensor",
    "register_processor",
    "unregister_processor",
]

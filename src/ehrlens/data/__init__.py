"""Patient samples -> processors -> padded tensors; samples from files and event tables.

Example:
    >>> from ehrlens.data import from_events, load_samples
    >>> schema = {"diagnoses": "nested_sequence", "procedures": "nested_sequence",
    ...           "drugs": "nested_sequence"}
    >>> samples = from_events("events.parquet", schema, labels="labels.csv")
    >>> samples == load_samples("events.parquet", schema, labels="labels.csv")
    True
"""

from .dataset import (
    MAX_CODES_PER_STEP,
    MAX_STEPS,
    FittedSchema,
    LengthBucketSampler,
    SampleDataset,
    create_sample_dataset,
    get_dataloader,
    length_buckets,
    move_to_device,
    split_by_patient,
)
from .events import EventTableWarning, from_events, to_events
from .meds import MedsData, MedsOptions, from_meds
from .processors import PAD_ID, UNK_ID, FeatureProcessor, register_processor
from .sources import load_samples
from .synthetic import SyntheticCohort, generate_cohort

__all__ = [
    "MAX_CODES_PER_STEP",
    "MAX_STEPS",
    "PAD_ID",
    "UNK_ID",
    "EventTableWarning",
    "FeatureProcessor",
    "FittedSchema",
    "LengthBucketSampler",
    "MedsData",
    "MedsOptions",
    "SampleDataset",
    "SyntheticCohort",
    "create_sample_dataset",
    "from_events",
    "from_meds",
    "generate_cohort",
    "get_dataloader",
    "length_buckets",
    "load_samples",
    "move_to_device",
    "register_processor",
    "split_by_patient",
    "to_events",
]

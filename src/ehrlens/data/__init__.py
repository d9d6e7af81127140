"""Patient samples -> processors -> padded tensors."""

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
from .meds import MedsData, MedsOptions, from_meds
from .processors import PAD_ID, UNK_ID, FeatureProcessor, register_processor
from .synthetic import SyntheticCohort, generate_cohort

__all__ = [
    "MAX_CODES_PER_STEP",
    "MAX_STEPS",
    "PAD_ID",
    "UNK_ID",
    "FeatureProcessor",
    "FittedSchema",
    "LengthBucketSampler",
    "MedsData",
    "MedsOptions",
    "SampleDataset",
    "SyntheticCohort",
    "create_sample_dataset",
    "from_meds",
    "generate_cohort",
    "get_dataloader",
    "length_buckets",
    "move_to_device",
    "register_processor",
    "split_by_patient",
]

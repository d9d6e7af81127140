"""Patient samples -> processors -> padded tensors."""

from .dataset import (
    FittedSchema,
    SampleDataset,
    create_sample_dataset,
    get_dataloader,
    move_to_device,
    split_by_patient,
)
from .processors import PAD_ID, UNK_ID, FeatureProcessor, register_processor
from .synthetic import SyntheticCohort, generate_cohort

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "FeatureProcessor",
    "FittedSchema",
    "SampleDataset",
    "SyntheticCohort",
    "create_sample_dataset",
    "generate_cohort",
    "get_dataloader",
    "move_to_device",
    "register_processor",
    "split_by_patient",
]

"""Patient samples -> processors -> padded tensors."""

from .dataset import (
    FittedSchema,
    SampleDataset,
    create_sample_dataset,
    get_dataloader,
    move_to_device,
    split_by_patient,
)
from .processors import PAD_ID, UNK_ID
from .synthetic import SyntheticCohort, generate_cohort

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "FittedSchema",
    "SampleDataset",
    "SyntheticCohort",
    "create_sample_dataset",
    "generate_cohort",
    "get_dataloader",
    "move_to_device",
    "split_by_patient",
]

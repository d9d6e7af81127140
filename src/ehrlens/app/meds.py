"""MEDS datasets in the train / explain / evaluate / report workflows.

Training reads the dataset with :func:`~ehrlens.data.meds.from_meds`, splits it by subject
(``subject_splits.parquet``, else a seeded 70/15/15 split of the subjects) and records the
feature mapping in the model card under ``"meds"``; later commands rebuild the same features
from the card (:func:`meds_samples_for_model`).

Example (what ``ehrlens train --data meds:meds/ --labels labels.parquet`` does):
    >>> from ehrlens.app.workflow import train_model
    >>> data, schema = read_for_training("meds/", "labels.parquet")
    >>> model, card = train_model(data.samples, schema, epochs=1,
    ...                           parts=training_parts(data, seed=0))
    >>> card["meds"] = card_entry(data, "meds/", "labels.parquet")
    >>> again = meds_samples_for_model(card, model.label_key, "meds/", "labels.parquet")
    >>> again.input_schema == model.schema.input_schema
    True
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..data.meds import MedsData, MedsOptions, MedsWarning, from_meds, meds_digest
from .workflow import group_parts

#: The card entry holding the MEDS feature mapping.
CARD_KEY = "meds"


#: What ``training_parts`` does with labelled subjects ``subject_splits.parquet`` leaves out.
UNSPLIT_CHOICES = ("error", "leave-out")


def training_parts(data: MedsData, seed: int, unsplit: str = "error") -> dict[str, str]:
    """The split for training: the dataset's subject splits, else a seeded split of the
    subjects (every sample of a subject in one part).

    Args:
        unsplit: labelled subjects that ``subject_splits.parquet`` does not name: ``"error"``
            (default) refuses them, naming how many and some of them; ``"leave-out"`` trains
            without them (they are "new" to the model) and warns with their count.

    Example:
        >>> data = from_meds("meds/", "labels.parquet")
        >>> parts = training_parts(data, seed=0, unsplit="leave-out")
        >>> parts["754281@2010-01-03T06:30:00"]     # subject 754281 is in "tuning"
        'val'
    """
    if unsplit not in UNSPLIT_CHOICES:
        raise ValueError(f"unsplit must be one of {UNSPLIT_CHOICES}, got {unsplit!r}")
    if data.parts is None:
        return group_parts({s["patient_id"]: s["subject_id"] for s in data.samples}, seed)
    left = [s for s in data.samples if s["patient_id"] not in data.parts]
    if left:
        subjects = sorted({int(s["subject_id"]) for s in left})
        what = (
            f"metadata/subject_splits.parquet names no split for {len(subjects)} labelled "
            f"subject(s) ({len(left)} of {len(data.samples)} samples), e.g. {subjects[:5]}"
        )
        if unsplit == "error":
            raise ValueError(
                f"{what}; complete the splits file, or train without them with "
                "--unsplit-subjects leave-out"
            )
        warnings.warn(
            f"{what}: left out of training, validation and testing", MedsWarning, stacklevel=2
        )
    return data.parts


def read_for_training(
    root: str | os.PathLike,
    labels: str | os.PathLike,
    *,
    features: Mapping[str, Sequence[str]] | None = None,
    numeric: Sequence[str] = (),
    time_bucket: str | None = None,
    label_key: str = "label",
) -> tuple[MedsData, dict[str, Any]]:
    """``(data, schema)`` for :func:`~ehrlens.app.workflow.train_model`: the samples and the
    ``{"input_schema", "output_schema"}`` derived from the data."""
    data = from_meds(
        root, labels, features=features, numeric=numeric, time_bucket=time_bucket,
        label_key=label_key,
    )  # fmt: skip
    schema: dict[str, Any] = {
        "input_schema": data.input_schema,
        "output_schema": data.output_schema,
    }
    if data.options.columns:  # the measurement codes of numeric features, in value order
        schema["columns"] = {k: list(v) for k, v in data.options.columns.items()}
    return data, schema


def card_entry(data: MedsData, root: str | os.PathLike, labels: str | os.PathLike) -> dict:
    """What a card records of a MEDS training run: options, root, labels, digest."""
    return {
        "options": data.options.to_dict(),
        "root": str(root),
        "labels": str(labels),
        "sha256": meds_digest(root, labels),
    }


def meds_options(card: Mapping[str, Any]) -> MedsOptions:
    """The MEDS feature mapping a model was trained with.

    Raises:
        ValueError: the model was not trained on MEDS data.
    """
    entry = card.get(CARD_KEY)
    if not isinstance(entry, Mapping) or "options" not in entry:
        raise ValueError(
            "the model was not trained on MEDS data (its card has no 'meds' entry), so it "
            "does not know how to build features from MEDS codes; train it with --data meds:ROOT"
        )
    return MedsOptions.from_dict(entry["options"])


def meds_samples_for_model(
    card: Mapping[str, Any],
    label_key: str,
    root: str | os.PathLike,
    labels: str | os.PathLike,
    shards: Sequence[int] | None = None,
) -> MedsData:
    """Samples of a MEDS dataset built as the model's training data were (the card's options).

    Example:
        >>> model, card = load_model_dir("meds-model/")     # trained on meds/
        >>> data = meds_samples_for_model(card, "label", "meds/", "labels.parquet")
        >>> len(data.samples), data.options.features == card["meds"]["options"]["features"]
        (21, True)
    """
    return from_meds(root, labels, options=meds_options(card), label_key=label_key, shards=shards)


__all__ = [
    "CARD_KEY",
    "card_entry",
    "meds_options",
    "meds_samples_for_model",
    "read_for_training",
    "training_parts",
]

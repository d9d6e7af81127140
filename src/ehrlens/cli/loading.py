"""The model directory and the patients a command works on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .options import MedsRoot

if TYPE_CHECKING:
    from ..data.dataset import SampleDataset
    from ..models.base import BaseModel


def load_data(
    data: Path | MedsRoot,
    labels: Path | None,
    card: dict[str, Any],
    label_key: str,
    input_schema: dict[str, str],
    on_bad_rows: str = "error",
) -> list[dict[str, Any]]:
    """Samples of ``data``: a MEDS dataset built with the card's feature mapping, or a file
    (event tables with each step's identity, for the attribution rows)."""
    if isinstance(data, MedsRoot):
        from ..app.meds import meds_samples_for_model

        if labels is None:
            raise click.UsageError("--data meds:ROOT needs --labels (MEDS task labels)")
        return meds_samples_for_model(card, label_key, data.root, labels).samples
    from ..data.sources import load_samples

    return load_samples(
        data, input_schema, labels=labels, label_key=label_key, columns=card.get("columns"),
        identity=True, on_bad_rows=on_bad_rows,
    )  # fmt: skip


def model_and_data(
    model_dir: Path,
    data: Path | MedsRoot,
    labels: Path | None,
    split: str,
    model_sha256: str | None = None,
    limits: dict[str, int | None] | None = None,
    on_bad_rows: str = "error",
) -> tuple[BaseModel, dict[str, Any], SampleDataset, list[dict[str, Any]]]:
    """``(model, card, dataset, samples)`` for the chosen split of the patients in ``data``,
    selected by the patient ids the card records (see :mod:`ehrlens.app.splits`);
    ``limits``: ``max_steps`` / ``max_codes_per_step`` of the dataset; ``on_bad_rows``: of
    event tables (:func:`~ehrlens.data.events.from_events`)."""
    from ..app.splits import recorded_patients, select_recorded_split
    from ..core.files import file_sha256
    from ..data import MAX_CODES_PER_STEP, MAX_STEPS, create_sample_dataset
    from ..models.directory import load_model_dir

    model, card = load_model_dir(model_dir, expected_sha256=model_sha256)
    label_key = model.schema.label_keys[0]
    samples = load_data(data, labels, card, label_key, model.schema.input_schema, on_bad_rows)
    limits = limits or {"max_steps": MAX_STEPS, "max_codes_per_step": MAX_CODES_PER_STEP}
    dataset = create_sample_dataset(
        samples,
        schema=model.schema,
        max_steps=limits["max_steps"],
        max_codes_per_step=limits["max_codes_per_step"],
    )
    legacy = split != "all" and recorded_patients(card) is None
    digest = file_sha256(data) if legacy and isinstance(data, Path) else None
    chosen = select_recorded_split(dataset, split, card, digest)
    if chosen is not dataset:
        keep = set(chosen.patient_ids)
        samples = [s for s in samples if str(s["patient_id"]) in keep]
    return model, card, chosen, samples

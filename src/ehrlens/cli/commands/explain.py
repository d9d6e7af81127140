"""``ehrlens explain``: long-format attributions of every patient, in resumable shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import handle_errors
from ..loading import model_and_data
from ..methods import check_method_options, method_option, method_options, parse_methods
from ..options import (
    MedsRoot,
    bucket_option,
    data_option,
    labels_option,
    model_option,
    on_bad_rows_option,
    overwrite_option,
    quiet_option,
    sha256_option,
    size_options,
    split_option,
    target_option,
)


@click.command()
@model_option
@data_option
@labels_option
@method_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder of Parquet shards (created; an interrupted run resumes there).",
)
@split_option
@click.option("--batch-size", default=64, type=click.IntRange(min=1), show_default=True)
@click.option(
    "--shard-size",
    default=1000,
    type=click.IntRange(min=1),
    show_default=True,
    help="Patients per shard.",
)
@target_option
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process; ray: Ray Data (extra ehrlens[ray]).",
)
@click.option("--address", default=None, help="Ray cluster address (default: start locally).")
@click.option("--workers", default=None, type=int, help="Ray workers (default: all CPUs).")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Where to explain (default: CPU; with --engine ray, GPUs when the cluster has them).",
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed of methods that take one (e.g. random)."
)
@sha256_option
@bucket_option
@size_options
@on_bad_rows_option
@overwrite_option
@quiet_option
@handle_errors
def explain(
    model_dir: Path,
    data: Path | MedsRoot,
    labels: Path | None,
    methods: tuple[str, ...],
    out: Path,
    split: str,
    batch_size: int,
    shard_size: int,
    target: str | None,
    engine: str,
    address: str | None,
    workers: int | None,
    device: str | None,
    seed: int,
    model_sha256: str | None,
    bucket: bool,
    max_steps: int | None,
    max_codes_per_step: int | None,
    on_bad_rows: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Explain every patient with each method; write long-format Parquet attributions
    (patient_id, feature, visit, position, code, score, method, model_id).

    A folder that holds this run's output resumes it; --overwrite replaces a previous run's
    manifest and shards there (other files are kept). A run that fails before writing any
    shard leaves no manifest behind."""
    import torch

    from ...app.task import card_classes, resolve_target
    from ...explain import explain_cohort

    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device is available to torch here")
    torch.manual_seed(seed)
    names = parse_methods(methods)
    limits = {"max_steps": max_steps, "max_codes_per_step": max_codes_per_step}
    options = method_options(names, seed)
    if engine == "ray" and isinstance(data, MedsRoot):
        # each worker reads its own data shard: nothing is turned into samples here
        result = _explain_meds_ray(
            model_dir, data, labels, options, out, split, batch_size, target, address,
            workers, quiet, model_sha256, overwrite,
        )  # fmt: skip
        n_patients = len(set(result.to_arrow().column("patient_id").to_pylist()))
        _summary(n_patients, names, result, out)
        return
    model, card, dataset, samples = model_and_data(
        model_dir, data, labels, split, model_sha256, limits, on_bad_rows
    )
    target_index = resolve_target(target, card_classes(card, model))
    check_method_options(model, options)
    if engine == "ray":
        from ...explain.ray_engine import explain_cohort_ray

        # JSON Lines are read by Ray Data itself; other inputs go as the parsed samples
        jsonl = isinstance(data, Path) and data.suffix.lower() == ".jsonl"
        source = data if split == "all" and jsonl else samples
        result = explain_cohort_ray(
            model_dir, source, options, out_dir=out, batch_size=batch_size,
            shard_size=shard_size, target_class_idx=target_index, address=address,
            num_workers=workers, progress=not quiet, model_sha256=model_sha256,
            num_gpus_per_worker=None if device is None else float(device == "cuda"),
            overwrite=overwrite, quiet=quiet,
        )  # fmt: skip
    else:
        model = model.to(device or "cpu")
        result = explain_cohort(
            model, dataset, options, batch_size=batch_size, target_class_idx=target_index,
            out_dir=out, shard_size=shard_size, model_id=card.get("model_id"),
            progress=not quiet, bucket_by_length=bucket, overwrite=overwrite,
        )  # fmt: skip
    _summary(len(dataset), names, result, out)


def _summary(n_patients: int, names: dict[str, Any], result: Any, out: Path) -> None:
    click.echo(
        f"{n_patients} patients x {len(names)} method(s): {result.num_rows} rows in "
        f"{len(result.shards)} shard(s) under {out} "
        f"({len(result.computed)} computed, {len(result.reused)} already complete)"
    )


def _explain_meds_ray(
    model_dir: Path,
    data: MedsRoot,
    labels: Path | None,
    options: dict[str, Any],
    out: Path,
    split: str,
    batch_size: int,
    target: str | None,
    address: str | None,
    workers: int | None,
    quiet: bool,
    model_sha256: str | None,
    overwrite: bool,
) -> Any:
    """``explain --engine ray --data meds:ROOT``: the split's samples by the ids the card
    records, each data shard read and explained on a worker."""
    from ...app.splits import recorded_patients
    from ...explain.ray_engine import explain_meds_ray
    from ...models.directory import CARD

    if labels is None:
        raise click.UsageError("--data meds:ROOT needs --labels (MEDS task labels)")
    from ...app.task import card_classes, resolve_target

    chosen = None
    card_path = model_dir / CARD
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    target_index = resolve_target(target, card_classes(card))
    if split != "all":
        recorded = recorded_patients(card)
        if split == "new" or recorded is None:
            raise click.UsageError(
                f"--split {split} with --engine ray on MEDS data needs the split's ids in the "
                "model's card (train, val or test); use --engine local for 'new'"
            )
        chosen = recorded[split]
    return explain_meds_ray(
        model_dir, data.root, labels, options, out_dir=out, batch_size=batch_size,
        target_class_idx=target_index, address=address, num_workers=workers,
        progress=not quiet, model_sha256=model_sha256, patient_ids=chosen, overwrite=overwrite,
        quiet=quiet,
    )  # fmt: skip

"""``ehrlens explain``: long-format attributions of every patient, in resumable shards."""

from __future__ import annotations

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
    help="Where to explain, on every engine (default: CPU; with --engine ray, GPUs when the "
    "cluster has them).",
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
    from ...data.sources import SizeLimits
    from ...explain import ExplainRun, LocalExecutor
    from ...models.directory import load_model_dir

    if device == "cuda" and engine == "local" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device is available to torch here")
    torch.manual_seed(seed)
    names = parse_methods(methods)
    options = method_options(names, seed)
    model, card = load_model_dir(model_dir, expected_sha256=model_sha256)
    target_index = resolve_target(target, card_classes(card, model))
    check_method_options(model, options)
    source = _source(model_dir, model, card, data, labels, split, model_sha256, on_bad_rows)
    run = ExplainRun(
        source, options, model_dir=model_dir, model_sha256=model_sha256, out_dir=out,
        overwrite=overwrite, batch_size=batch_size, shard_size=shard_size,
        bucket_by_length=bucket, target_class_idx=target_index, device=device,
        limits=SizeLimits(max_steps, max_codes_per_step), model_id=card.get("model_id"),
    )  # fmt: skip
    if engine == "ray":
        from ...explain.ray_engine import RayExecutor

        executor = RayExecutor(address, workers, progress=not quiet, quiet=quiet)
        result = executor.run(run)
    else:
        result = LocalExecutor(progress=not quiet).run(run, model=model)
    click.echo(
        f"{result.num_patients} patients x {len(names)} method(s): {result.num_rows} rows in "
        f"{len(result.shards)} shard(s) under {out} "
        f"({len(result.computed)} computed, {len(result.reused)} already complete)"
    )


def _source(
    model_dir: Path,
    model: Any,
    card: dict[str, Any],
    data: Path | MedsRoot,
    labels: Path | None,
    split: str,
    model_sha256: str | None,
    on_bad_rows: str,
) -> Any:
    """The sample source of ``--data``, restricted to ``--split`` by the ids the card records
    (an older card without them: the split is redrawn on the driver, as every command does)."""
    from ...app.meds import meds_options
    from ...app.splits import split_selection
    from ...data.sources import JSONL_SUFFIXES, EventTableSource, JsonlSource, MedsSource

    chosen = split_selection(card, split)
    if chosen is None:
        _, _, dataset, _ = model_and_data(
            model_dir, data, labels, split, model_sha256, {"max_steps": None,
            "max_codes_per_step": None}, on_bad_rows,
        )  # fmt: skip
        chosen = (list(dataset.patient_ids), [], f"the {split!r} patients of the redrawn split")
    patients, exclude, selection = chosen
    label_key = model.schema.label_keys[0]
    if isinstance(data, MedsRoot):
        if labels is None:
            raise click.UsageError("--data meds:ROOT needs --labels (MEDS task labels)")
        return MedsSource(
            data.root, labels, meds_options(card).to_dict(), label_key, patients, exclude,
            selection,
        )  # fmt: skip
    if data.name.lower().endswith(JSONL_SUFFIXES):
        if labels is not None:
            raise click.UsageError(f"{data}: JSON Lines samples carry their labels; drop --labels")
        return JsonlSource(data, patients, exclude, selection)
    return EventTableSource(
        data, model.schema.input_schema, labels=labels, label_key=label_key,
        columns=card.get("columns"), on_bad_rows=on_bad_rows, patients=patients,
        exclude=exclude, selection=selection,
    )  # fmt: skip

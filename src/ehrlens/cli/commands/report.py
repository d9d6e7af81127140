"""``ehrlens report``: the HTML report of an ``explain`` run."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import handle_errors, writes
from ..loading import model_and_data
from ..options import (
    DataType,
    MedsRoot,
    labels_option,
    model_option,
    on_bad_rows_option,
    quiet_option,
    sha256_option,
    size_options,
)

#: The file of ``report --heatmaps`` that names each heatmap's patient.
HEATMAP_INDEX = "index.csv"


@click.command()
@model_option
@click.option(
    "--data",
    type=DataType(),
    default=None,
    help="The explained patients (JSON Lines, event table or meds:ROOT with --labels): "
    "checks that the attributions describe them and shows their labels. Optional: the "
    "attribution folder holds each patient's prediction.",
)
@labels_option
@click.option(
    "--attributions",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder written by `ehrlens explain`.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="HTML file to write (one self-contained file).",
)
@click.option(
    "--codes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV with header code,description.",
)
@click.option(
    "--evaluation",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Faithfulness table written by `ehrlens evaluate --out` (JSON or CSV), shown in the "
    "report's header section.",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Codes listed per patient.",
)
@click.option(
    "--max-patients",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Patient sections: the highest-risk patients first (0 = all).",
)
@click.option(
    "--heatmaps",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write one heatmap PNG per reported patient here, named by rank "
    "(0001-<patient id, sanitised>.png), with index.csv naming each file's patient "
    "(extra ehrlens[plot]).",
)
@sha256_option
@size_options
@on_bad_rows_option
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file and heatmap files.")
@quiet_option
@handle_errors
@writes("out", "heatmaps")
def report(
    model_dir: Path,
    data: Path | MedsRoot | None,
    labels: Path | None,
    attributions: Path,
    out: Path,
    codes: Path | None,
    evaluation: Path | None,
    top_k: int,
    max_patients: int,
    heatmaps: Path | None,
    model_sha256: str | None,
    max_steps: int | None,
    max_codes_per_step: int | None,
    on_bad_rows: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Write an HTML report: the model card, a colour legend per method, per patient the
    prediction, a timeline of visits with codes shaded by score, the top codes, methods side by
    side; the cohort's most influential codes; with --evaluation, the faithfulness table."""
    from ...core.files import check_overwrite, data_file_name
    from ...explain import read_attributions
    from ...explain.consistency import check_attributions_match
    from ...explain.shards import read_run_manifest
    from ...models.directory import load_model_dir
    from ...report import patient_predictions, read_descriptions, read_evaluation, write_report
    from ...report.classes import stored_predictions
    from ...report.header import class_names
    from ...report.predictions import with_labels

    check_overwrite([out], overwrite)
    frame = read_attributions(attributions)
    if data is None:
        model, card = load_model_dir(model_dir, expected_sha256=model_sha256)
        dataset = None
    else:
        limits = {"max_steps": max_steps, "max_codes_per_step": max_codes_per_step}
        model, card, dataset, _ = model_and_data(
            model_dir, data, labels, "all", model_sha256, limits, on_bad_rows
        )
    ids = sorted(set(frame["model_id"]))
    if ids != [card.get("model_id")]:
        raise ValueError(
            f"{attributions} holds attributions of model(s) {ids}, not only of "
            f"{model_dir} (model {card.get('model_id')})"
        )
    if dataset is not None:
        check_attributions_match(frame, dataset, model.schema)
    target = read_run_manifest(attributions).get("settings", {}).get("target_class_idx")
    rows = read_evaluation(evaluation) if evaluation is not None else None
    predictions = stored_predictions(frame, None, class_names(card), model.mode)
    if predictions is None:
        if dataset is None:
            raise click.UsageError(
                f"{attributions}: the rows hold no predictions (written by an older ehrlens); "
                "pass --data to compute them, or run explain again"
            )
        predictions = patient_predictions(model, dataset, target=target)
    elif dataset is not None:
        predictions = with_labels(predictions, dataset)
    explained = [p for p in dict.fromkeys(frame["patient_id"]) if p in predictions]
    missing = len(set(frame["patient_id"])) - len(explained)
    if missing:
        raise ValueError(f"{missing} explained patient(s) are not in --data")
    explained.sort(key=lambda p: -predictions[p].probability)
    chosen = explained if max_patients == 0 else explained[:max_patients]
    pictures = {}
    if heatmaps is not None:  # file names from the rank, never from the patient id alone
        pictures = {
            pid: heatmaps / data_file_name(rank, pid, ".png")
            for rank, pid in enumerate(chosen, start=1)
        }
        check_overwrite([heatmaps / HEATMAP_INDEX, *pictures.values()], overwrite)
    descriptions = read_descriptions(codes) if codes is not None else None
    if descriptions is None and isinstance(data, MedsRoot):
        from ...data.meds import code_descriptions

        descriptions = code_descriptions(data.root) or None  # metadata/codes.parquet
    write_report(
        out, frame, predictions, descriptions=descriptions, top_k=top_k, patients=chosen,
        card=card, target=target, evaluation=rows,
    )  # fmt: skip
    click.echo(f"wrote {out} ({len(chosen)} of {len(explained)} patients)")
    if heatmaps is not None:
        import csv

        from ...core.files import atomic_write
        from ...report.plots import plot_patient_heatmap

        for pid, path in pictures.items():
            plot_patient_heatmap(frame, pid, path)
        with atomic_write(heatmaps / HEATMAP_INDEX) as f:
            writer = csv.writer(f)
            writer.writerow(["file", "patient_id"])
            writer.writerows((path.name, pid) for pid, path in pictures.items())
        click.echo(f"wrote {len(chosen)} heatmaps under {heatmaps} (patients in {HEATMAP_INDEX})")

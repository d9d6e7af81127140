"""``ehrlens evaluate``: faithfulness of each method, with bootstrap CIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from ..errors import handle_errors, writes
from ..loading import model_and_data
from ..methods import check_method_options, method_option, method_options, parse_methods

if TYPE_CHECKING:
    from ...metrics.removal import Ablation

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
)
from ..quiet import warn


@click.command()
@model_option
@data_option
@labels_option
@method_option
@split_option
@click.option("--batch-size", default=64, type=click.IntRange(min=1), show_default=True)
@click.option(
    "--ablation",
    type=click.Choice(["zero", "mean"]),
    default="zero",
    show_default=True,
    help="What removed numeric inputs become (codes always become padding).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Bootstrap draws for CIs.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the table as JSON (.json) or CSV (.csv).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write faithfulness curves as PNG (extra ehrlens[plot]).",
)
@click.option(
    "--sanity",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also run the cascading model-parameter randomisation check (Adebayo et al.) on the "
    "first --batch-size patients and write its table as JSON (.json) or CSV (.csv).",
)
@click.option(
    "--sanity-plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the sanity check as PNG (needs --sanity; extra ehrlens[plot]).",
)
@click.option(
    "--ground-truth",
    "ground_truth_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON {patient_id: {feature: [planted codes]}} (the ground_truth.json of "
    "`ehrlens synthetic`): also score how well each method recovers the planted codes "
    "(signal AUROC, precision@k and recall@k, with 95%% intervals).",
)
@click.option(
    "--k",
    "top_k",
    default=5,
    type=click.IntRange(min=1),
    show_default=True,
    help="Cut-off of precision@k and recall@k (with --ground-truth).",
)
@click.option("--seed", default=0, show_default=True)
@sha256_option
@bucket_option
@size_options
@on_bad_rows_option
@overwrite_option
@quiet_option
@handle_errors
@writes("out", "plot", "sanity", "sanity_plot")
def evaluate(
    model_dir: Path,
    data: Path | MedsRoot,
    labels: Path | None,
    methods: tuple[str, ...],
    split: str,
    batch_size: int,
    ablation: str,
    bootstrap: int,
    out: Path | None,
    plot: Path | None,
    sanity: Path | None,
    sanity_plot: Path | None,
    ground_truth_path: Path | None,
    top_k: int,
    seed: int,
    model_sha256: str | None,
    bucket: bool,
    max_steps: int | None,
    max_codes_per_step: int | None,
    on_bad_rows: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Faithfulness of each method: comprehensiveness (the drop in the explained class's
    probability when a method's top inputs are removed; higher is better) and sufficiency (the
    drop when only they are kept; lower is better), with 95% bootstrap CIs."""
    import torch

    from ...app.task import MIN_SPLIT_PATIENTS
    from ...core.files import check_overwrite
    from ...core.memory import check_fits
    from ...data import get_dataloader
    from ...interpret.registry import make_interpreter
    from ...metrics import Evaluator

    names = parse_methods(methods)
    if sanity_plot is not None and sanity is None:
        raise click.UsageError("--sanity-plot needs --sanity (the table it draws)")
    check_overwrite([p for p in (out, plot, sanity, sanity_plot) if p is not None], overwrite)
    torch.manual_seed(seed)
    limits = {"max_steps": max_steps, "max_codes_per_step": max_codes_per_step}
    model, _, dataset, _ = model_and_data(
        model_dir, data, labels, split, model_sha256, limits, on_bad_rows
    )
    check_fits(  # the draws (int64) and the values they pick (float64), before any work
        16 * bootstrap * len(dataset),
        f"--bootstrap {bootstrap:,} over {len(dataset):,} patients",
    )
    if len(dataset) < MIN_SPLIT_PATIENTS:
        warn(
            f"{len(dataset)} patient(s) in --split {split}: the confidence intervals of "
            f"faithfulness from fewer than {MIN_SPLIT_PATIENTS} patients are wide and unstable"
        )
    ground_truth = None
    if ground_truth_path is not None:
        from ...metrics.recovery import read_ground_truth

        ground_truth = read_ground_truth(ground_truth_path, dataset.patient_ids)
    evaluator = Evaluator(
        model,
        ablation=cast("Ablation", ablation),  # a click.Choice of the two
        n_bootstrap=bootstrap,
        seed=seed,
        progress=not quiet,
        ground_truth=ground_truth,
        k=top_k,
    )
    results = {}
    chosen = method_options(names, seed)
    check_method_options(model, chosen)
    for name, options in chosen.items():
        method = make_interpreter(name, model, **options)
        loader = get_dataloader(dataset, batch_size, bucket_by_length=bucket)
        results[name] = evaluator.evaluate(loader, method, name)
    rows = [r.to_dict() for r in results.values()]
    click.echo(_evaluation_table(rows))
    if ground_truth is not None:
        click.echo(_recovery_table(rows, top_k))
    if out is not None:
        _write_rows(out, rows, "results")
        click.echo(f"wrote {out}")
    if plot is not None:
        from ...report.plots import plot_faithfulness_curves

        plot_faithfulness_curves(results, plot)
        click.echo(f"wrote {plot}")
    if sanity is not None:
        _sanity(model, dataset, names, seed, batch_size, bootstrap, sanity, sanity_plot)


def _sanity(
    model: Any,
    dataset: Any,
    names: dict[str, dict[str, Any]],
    seed: int,
    batch_size: int,
    bootstrap: int,
    table: Path,
    plot: Path | None,
) -> None:
    """Cascading model-parameter randomisation of every method on one batch; table + plot."""
    from ...data import get_dataloader
    from ...metrics import ModelParameterRandomisation

    batch = next(iter(get_dataloader(dataset, batch_size)))
    results = [
        ModelParameterRandomisation(name, options, n_bootstrap=bootstrap, seed=seed)(model, batch)
        for name, options in method_options(names, seed).items()
    ]
    rows = [record for result in results for record in result.to_records()]
    click.echo(_sanity_table(results))
    _write_rows(table, rows, "sanity")
    click.echo(f"wrote {table}")
    if plot is not None:
        from ...report.plots import plot_sanity_checks

        plot_sanity_checks(results, plot)
        click.echo(f"wrote {plot}")


def _write_rows(path: Path, rows: list[dict[str, Any]], key: str) -> None:
    """Write table rows atomically: CSV for a ``.csv`` path, else JSON ``{key: rows}``."""
    from ...core.files import atomic_write

    with atomic_write(path) as f:
        if path.suffix.lower() == ".csv":
            import csv

            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        else:
            json.dump({key: rows}, f, indent=2)


def _sanity_table(results: list[Any]) -> str:
    """Each method's correlation after the first and after the last randomisation step."""
    header = f"{'method':22s} {'after ' + 'first step':>26s} {'all randomised':>26s}"
    lines = ["sanity: rank correlation with the trained model's explanation", header]
    lines.append("-" * len(header))
    for result in results:
        first, last = result.rows[0].summary, result.rows[-1].summary
        cells = [f"{s.mean:.3f} [{s.low:.3f}, {s.high:.3f}]" for s in (first, last)]
        lines.append(f"{result.method:22s} {cells[0]:>26s} {cells[1]:>26s}")
    return "\n".join(lines)


def _recovery_table(rows: list[dict[str, Any]], k: int) -> str:
    """Recovery of the planted codes per method, each metric with its 95% interval."""
    metrics = ("signal_auroc", f"precision@{k}", f"recall@{k}")

    def cell(row: dict[str, Any], metric: str) -> str:
        return f"{row[metric]:.3f} [{row[metric + '_low']:.3f}, {row[metric + '_high']:.3f}]"

    header = f"{'method':22s} " + " ".join(f"{m:>26s}" for m in metrics)
    lines = [
        "planted codes recovered (higher is better; chance: signal AUROC 0.5)",
        header,
        "-" * len(header),
    ]
    for row in rows:
        lines.append(f"{row['method']:22s} " + " ".join(f"{cell(row, m):>26s}" for m in metrics))
    return "\n".join(lines)


def _evaluation_table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], metric: str) -> str:
        return f"{row[metric]:.3f} [{row[metric + '_low']:.3f}, {row[metric + '_high']:.3f}]"

    header = f"{'method':22s} {'comprehensiveness':>26s} {'sufficiency':>26s} {'s/1000 pts':>10s}"
    direction = f"{'':22s} {'(higher is better)':>26s} {'(lower is better)':>26s} {'':>10s}"
    lines = [header, direction.rstrip(), "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['method']:22s} {cell(row, 'comprehensiveness'):>26s} "
            f"{cell(row, 'sufficiency'):>26s} {row['seconds_per_1000']:>10.2f}"
        )
    return "\n".join(lines)

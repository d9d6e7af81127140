"""``ehrlens demo``: the built-in synthetic walkthrough (see :mod:`ehrlens.app.demo`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import handle_errors


@click.command()
@click.option("--full", is_flag=True, help="The full-size run: two models, many minutes.")
@click.option(
    "--patients",
    type=click.IntRange(min=1),
    default=None,
    help="Cohort size [default: 1500; 3000 with --full].",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Training epochs per model [default: 5; 8 with --full].",
)
@click.option(
    "--explain",
    type=click.IntRange(min=1),
    default=None,
    help="Highest-risk test patients explained [default: 30; 50 with --full].",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ehrlens-demo"),
    show_default=True,
    help="Folder of the report (the default folder's report is replaced by the next demo).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing report in --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@handle_errors
def demo(
    full: bool,
    patients: int | None,
    epochs: int | None,
    explain: int | None,
    seed: int,
    out: Path,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Train a model on built-in synthetic data (about a minute), explain its highest-risk
    test patients with rollout, flow and Chefer, and write the HTML report."""
    from ...app.demo import main as run_demo

    argv = ["--seed", str(seed), "--out", str(out)]
    for name, value in (("--patients", patients), ("--epochs", epochs), ("--explain", explain)):
        if value is not None:
            argv += [name, str(value)]
    argv += [
        flag for flag, on in (("--full", full), ("--overwrite", overwrite), ("-q", quiet)) if on
    ]
    code = run_demo(argv)
    if code:
        raise SystemExit(code)

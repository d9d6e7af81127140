"""``ehrlens demo``: the built-in synthetic walkthrough (see :mod:`ehrlens.app.demo`)."""

from __future__ import annotations

import click

from ..errors import handle_errors


@click.command()
@click.option(
    "--patients", default=3000, type=click.IntRange(min=1), show_default=True, help="Cohort size."
)
@click.option(
    "--epochs",
    default=8,
    type=click.IntRange(min=1),
    show_default=True,
    help="Training epochs per model.",
)
@click.option(
    "--explain",
    default=4,
    type=click.IntRange(min=1),
    show_default=True,
    help="Test patients to explain.",
)
@click.option("--seed", default=0, show_default=True)
@handle_errors
def demo(patients: int, epochs: int, explain: int, seed: int) -> None:
    """Train two models on built-in synthetic data and explain a few patients."""
    from ...app.demo import main as run_demo

    run_demo(
        [
            *("--patients", str(patients), "--epochs", str(epochs)),
            *("--explain", str(explain), "--seed", str(seed)),
        ]
    )

"""``ehrlens synthetic``: write a synthetic cohort with planted risk codes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from ..errors import handle_errors, writes

if TYPE_CHECKING:
    from ...data.synthetic import Layout

from ..options import overwrite_option, quiet_option


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--patients", default=1000, type=click.IntRange(min=1), show_default=True, help="Cohort size."
)
@click.option(
    "--layout",
    type=click.Choice(["sequence", "nested", "stagenet"]),
    default="nested",
    show_default=True,
    help="Flat code lists, visits of codes, or timed visits (for the stagenet model).",
)
@click.option("--seed", default=0, show_default=True)
@overwrite_option
@quiet_option
@handle_errors
@writes("out_dir")
def synthetic(
    out_dir: Path, patients: int, layout: str, seed: int, overwrite: bool, quiet: bool
) -> None:
    """Write a synthetic cohort with planted risk codes to OUT_DIR.

    Files: samples.jsonl, events.parquet + labels.csv (the same patients as an event table),
    schema.json, codes.csv (descriptions naming the planted codes), ground_truth.json, risk.csv
    (each patient's noise-free risk: `train --risk` prints the best achievable AUROC).
    """
    from ...app.workflow import SYNTHETIC_FILES, write_synthetic_cohort
    from ...core.files import check_overwrite

    check_overwrite([out_dir / name for name in SYNTHETIC_FILES.values()], overwrite)
    files = write_synthetic_cohort(
        out_dir, n_patients=patients, layout=cast("Layout", layout), seed=seed
    )
    for name, path in files.items():
        click.echo(f"{name:13s} {path}")

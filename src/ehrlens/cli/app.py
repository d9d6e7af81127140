"""The ``ehrlens`` command: synthetic data, train, explain, evaluate, report.

The group and its commands are built without importing torch or the library's heavy layers
(each command imports what it needs when it runs), so ``ehrlens --help`` is instant. Each
command lives in its own module under :mod:`ehrlens.cli.commands`; shared options are in
:mod:`ehrlens.cli.options`, method parsing in :mod:`ehrlens.cli.methods`, exit codes in
:mod:`ehrlens.cli.errors`.
"""

from __future__ import annotations

import click

from ..core import __version__
from .commands.demo import demo
from .commands.describe import describe
from .commands.evaluate import evaluate
from .commands.explain import explain
from .commands.report import HEATMAP_INDEX, report
from .commands.synthetic import synthetic
from .commands.train import train
from .errors import (
    EPILOG,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_CONFLICT,
    EXIT_USAGE,
    handle_errors,
    writes,
)
from .methods import method_help_text
from .options import SPLIT_CHOICES

__all__ = [
    "EPILOG",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT_CONFLICT",
    "EXIT_USAGE",
    "HEATMAP_INDEX",
    "SPLIT_CHOICES",
    "handle_errors",
    "main",
    "method_help_text",
    "writes",
]


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="ehrlens")
def main() -> None:
    """Explain the predictions of attention-based clinical models.

    \b
    A typical session:
      ehrlens synthetic data/                      # or bring your own patients
      ehrlens train --data data/samples.jsonl --schema data/schema.json --out model/
      ehrlens describe --model model/                # classes, data, test metrics
      ehrlens explain --model model/ --data data/samples.jsonl -m rollout,chefer --out attr/
      ehrlens evaluate --model model/ --data data/samples.jsonl -m rollout,random
      ehrlens report --model model/ --data data/samples.jsonl --attributions attr/ \\
          --out report.html --codes data/codes.csv
    """


for _command in (synthetic, train, describe, explain, evaluate, report, demo):
    main.add_command(_command)

"""Options shared by several ``ehrlens`` commands, and their checks.

Nothing here imports torch at import time: the library is imported by the command that runs,
so ``ehrlens --help`` stays instant. Values that live in heavier modules are copied here and a
test keeps them equal (``SPLIT_CHOICES``, ``MAX_STEPS``, ``MAX_CODES_PER_STEP``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

#: ``--split`` choices (as ``ehrlens.app.splits.SPLIT_CHOICES``).
SPLIT_CHOICES = ("all", "train", "val", "test", "new")
#: Default size caps (as ``ehrlens.data.dataset.MAX_STEPS`` / ``MAX_CODES_PER_STEP``).
MAX_STEPS = 10_000
MAX_CODES_PER_STEP = 1_000


class LazyChoice(click.Choice):
    """A :class:`click.Choice` whose choices are read from ``source()`` the first time they
    are needed (help or a value to check), so building the command imports nothing heavy.

    Example:
        >>> names = LazyChoice(lambda: ["transformer", "stagenet"])
        >>> names.convert("stagenet", None, None)
        'stagenet'
    """

    def __init__(self, source: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._source = source
        self._choices: Sequence[str] | None = None
        self.case_sensitive = case_sensitive

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        if self._choices is None:
            self._choices = tuple(self._source())
        return self._choices

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        self._choices = tuple(value)


def model_names() -> list[str]:
    """Short names of the model classes (``ehrlens.models.model_classes()``)."""
    from ..models.base import model_classes

    return list(model_classes())


class MedsRoot(str):
    """``--data meds:ROOT``: the root folder of a MEDS dataset."""

    @property
    def root(self) -> Path:
        return Path(self)


class DataType(click.ParamType):
    """``--data``: an existing file, or ``meds:ROOT`` (a MEDS dataset folder)."""

    name = "PATH|meds:ROOT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (Path, MedsRoot)):
            return value
        text = str(value)
        if text.startswith("meds:"):
            root = Path(text[len("meds:") :])
            if not root.is_dir():
                self.fail(f"MEDS dataset folder {str(root)!r} does not exist", param, ctx)
            return MedsRoot(root)
        return click.Path(exists=True, dir_okay=False, path_type=Path).convert(value, param, ctx)


data_option = click.option(
    "--data",
    type=DataType(),
    required=True,
    help="Patients: samples as JSON Lines (.jsonl), a long-format event table "
    "(.parquet/.csv: patient_id, visit_id, time, feature, code[, value]), or meds:ROOT, a "
    "MEDS dataset folder (with --labels).",
)
labels_option = click.option(
    "--labels",
    type=click.Path(exists=True, path_type=Path),
    help="For event tables: CSV/Parquet with patient_id and the label column. For MEDS: task "
    "labels (subject_id, prediction_time, one *_value column), a Parquet file or a folder.",
)


def _feature_groups(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, list[str]] | None:
    groups: dict[str, list[str]] = {}
    for value in values:
        name, sep, prefixes = value.partition("=")
        items = [p.strip() for p in prefixes.split(",") if p.strip()]
        if not sep or not name.strip() or not items:
            raise click.BadParameter(f"expected NAME=PREFIX[,PREFIX...], got {value!r}")
        if name.strip() in groups:
            raise click.BadParameter(f"feature {name.strip()!r} is given twice")
        groups[name.strip()] = items
    return groups or None


_meds_options = [
    click.option(
        "--feature",
        "features",
        multiple=True,
        callback=_feature_groups,
        metavar="NAME=PREFIX,...",
        help="MEDS: a feature of the codes with these vocabulary prefixes (or exactly these "
        "codes), e.g. diagnoses=ICD9CM,ICD10CM; repeat for more [default: one feature per "
        "prefix, 'other' for codes without one].",
    ),
    click.option(
        "--numeric",
        multiple=True,
        metavar="NAME",
        help="MEDS: build this feature from the numeric_value of its codes (a time series).",
    ),
    click.option(
        "--time-bucket",
        default=None,
        metavar="FREQ",
        help="MEDS: one step per interval (pandas frequency, e.g. 1h, 1D) [default: one step "
        "per distinct time].",
    ),
]


def meds_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--feature``, ``--numeric`` and ``--time-bucket``: how ``train`` maps MEDS codes."""
    for option in reversed(_meds_options):
        command = option(command)
    return command


model_option = click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Model directory written by `ehrlens train`.",
)
split_option = click.option(
    "--split",
    type=click.Choice(SPLIT_CHOICES),
    default="all",
    show_default=True,
    help="Which patients: all; train, val or test: those the model's card lists in that part "
    "of its training split (selected by patient id, whatever the file); new: patients in none.",
)
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace output files that already exist."
)
quiet_option = click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress bars, and no warnings or logs of other libraries (scikit-learn, Ray); "
    "ehrlens's own warnings are still shown.",
)
on_bad_rows_option = click.option(
    "--on-bad-rows",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="Event tables: stop at rows that cannot be read (error, naming them), or drop them "
    "with a warning that counts them (skip).",
)
target_option = click.option(
    "--target",
    default=None,
    metavar="CLASS",
    help="Class to explain, by name or index (default: the positive class of a binary model, "
    "the predicted class of a multiclass one). The classes, in output order, are in the "
    "model's card: `ehrlens describe --model DIR`.",
)
bucket_option = click.option(
    "--bucket/--no-bucket",
    default=True,
    show_default=True,
    help="Batch patients of similar length together (less padding; same scores).",
)


def _sha256_hex(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise click.BadParameter("expected a SHA-256 in hex: 64 digits 0-9, a-f")
    return value


sha256_option = click.option(
    "--model-sha256",
    "model_sha256",
    callback=_sha256_hex,
    metavar="HEX",
    default=None,
    help="Load the model only if its directory (model.pt and card.json) has this SHA-256, as "
    "`ehrlens train` prints it (from a source you trust; the checksum inside model.pt detects "
    "damage, not edits).",
)


def size_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--max-steps`` and ``--max-codes-per-step``, passed on as ``limits``."""

    def limits(ctx: click.Context, param: click.Parameter, value: int) -> int | None:
        return None if value == 0 else value

    command = click.option(
        "--max-codes-per-step",
        type=click.IntRange(min=0),
        default=MAX_CODES_PER_STEP,
        show_default=True,
        callback=limits,
        help="Refuse a visit or step with more codes (0: no limit).",
    )(command)
    return click.option(
        "--max-steps",
        type=click.IntRange(min=0),
        default=MAX_STEPS,
        show_default=True,
        callback=limits,
        help="Refuse a patient with more steps (codes, visits) in a feature (0: no limit).",
    )(command)


def learning_rate(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Callback of ``--lr``: a finite number > 0."""
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite number > 0, got {value}")
    return value

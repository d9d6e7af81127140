"""The ``ehrlens`` command: synthetic data, train, explain, evaluate, report."""

from __future__ import annotations

import inspect
import json
import math
import re
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from ..core.files import OutputConflictError
from ..models.base import model_classes

if TYPE_CHECKING:
    from ..data.synthetic import Layout
    from ..metrics.removal import Ablation

#: Exit codes, also listed in ``ehrlens --help``.
EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_OUTPUT_CONFLICT = 3
EXIT_INTERRUPTED = 130

EPILOG = (
    "Exit codes: 0 success; 1 bad input (data, schema or model: the message names the file, "
    "row, sample or feature); 2 bad command-line usage; 3 the output already holds something "
    "this run would overwrite, or another run is writing it (nothing was changed; pass "
    "--overwrite to replace files); 130 interrupted (re-run the same command to resume "
    "`explain`)."
)

#: The file of ``report --heatmaps`` that names each heatmap's patient.
HEATMAP_INDEX = "index.csv"
#: ``--split`` choices (as ``ehrlens.app.splits.SPLIT_CHOICES``, kept here so that the command
#: line starts without importing the app layer).
SPLIT_CHOICES = ("all", "train", "val", "test", "new")


def method_help_text() -> str:
    """Help of ``--method``: every registered method with its summary, read from the registry
    when the help is shown (so methods registered after import are listed too)."""
    from ..interpret.registry import method_help

    width = max((len(name) for name, _ in method_help()), default=0)
    lines = [f"{name:{width}s}  {summary}" for name, summary in method_help()]
    return "Method(s), repeated or comma-separated [default: rollout]:\n\n\b\n" + "\n".join(lines)


class _MethodOption(click.Option):
    """``--method``: its help lists the methods registered at the time it is shown."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = method_help_text()
        return super().get_help_record(ctx)


def _fail(message: str, code: int) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into a one-line message and a documented exit code."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OutputConflictError as error:
            _fail(str(error), EXIT_OUTPUT_CONFLICT)
        except KeyError as error:
            _fail(f"missing key {error}", EXIT_BAD_INPUT)
        except (ValueError, TypeError, OSError, ImportError) as error:
            _fail(str(error), EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            _fail("interrupted; run the same command again to resume", EXIT_INTERRUPTED)

    return wrapper


def writes(*options: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Hold the output lock of each named option (unset ones skipped) while the command runs:
    one writer per output; a second one exits 3 naming the first (see
    :mod:`ehrlens.core.locks`). Goes below :func:`handle_errors`."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from ..core.locks import output_locks

            with output_locks(*(kwargs.get(option) for option in options)):
                return command(*args, **kwargs)

        return wrapper

    return decorate


def _methods(values: tuple[str, ...]) -> list[str]:
    from ..interpret.registry import METHODS

    names = [m.strip() for value in values for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise click.BadParameter(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names)) or ["rollout"]


def _method_options(names: list[str], seed: int) -> dict[str, dict[str, Any]]:
    """``{name: options}``: ``seed`` goes to every method whose constructor takes one."""
    from ..interpret.registry import METHODS

    return {name: ({"seed": seed} if "seed" in METHODS[name].params else {}) for name in names}


def _model_and_data(
    model_dir: Path,
    data: Path,
    labels: Path | None,
    split: str,
    model_sha256: str | None = None,
    limits: dict[str, int | None] | None = None,
):
    """``(model, card, dataset, samples)`` for the chosen split of the patients in ``data``,
    selected by the patient ids the card records (see :mod:`ehrlens.app.splits`);
    ``limits``: ``max_steps`` / ``max_codes_per_step`` of the dataset."""
    from ..app.splits import recorded_patients, select_recorded_split
    from ..core.files import file_sha256
    from ..data import MAX_CODES_PER_STEP, MAX_STEPS, create_sample_dataset
    from ..data.sources import load_samples
    from ..models.directory import load_model_dir

    model, card = load_model_dir(model_dir, expected_sha256=model_sha256)
    label_key = model.schema.label_keys[0]
    samples = load_samples(
        data,
        model.schema.input_schema,
        labels=labels,
        label_key=label_key,
        columns=card.get("columns"),
    )
    limits = limits or {"max_steps": MAX_STEPS, "max_codes_per_step": MAX_CODES_PER_STEP}
    dataset = create_sample_dataset(
        samples,
        schema=model.schema,
        max_steps=limits["max_steps"],
        max_codes_per_step=limits["max_codes_per_step"],
    )
    legacy = split != "all" and recorded_patients(card) is None
    chosen = select_recorded_split(dataset, split, card, file_sha256(data) if legacy else None)
    if chosen is not dataset:
        keep = set(chosen.patient_ids)
        samples = [s for s in samples if str(s["patient_id"]) in keep]
    return model, card, chosen, samples


_data_option = click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Patients: samples as JSON Lines (.jsonl) or a long-format event table "
    "(.parquet/.csv: patient_id, visit_id, time, feature, code[, value]).",
)
_labels_option = click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="For event tables: CSV/Parquet with patient_id and the label column.",
)
_model_option = click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Model directory written by `ehrlens train`.",
)
_split_option = click.option(
    "--split",
    type=click.Choice(SPLIT_CHOICES),
    default="all",
    show_default=True,
    help="Which patients: all; train, val or test: those the model's card lists in that part "
    "of its training split (selected by patient id, whatever the file); new: patients in none.",
)
_overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace output files that already exist."
)


def _sha256_hex(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise click.BadParameter("expected a SHA-256 in hex: 64 digits 0-9, a-f")
    return value


_sha256_option = click.option(
    "--model-sha256",
    "model_sha256",
    callback=_sha256_hex,
    metavar="HEX",
    default=None,
    help="Load the model only if model.pt has this SHA-256 (from a source you trust; the "
    "checksum inside the file detects damage, not edits).",
)


def _size_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--max-steps`` and ``--max-codes-per-step``, passed on as ``limits``."""
    from ..data.dataset import MAX_CODES_PER_STEP, MAX_STEPS

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


_bucket_option = click.option(
    "--bucket/--no-bucket",
    default=True,
    show_default=True,
    help="Batch patients of similar length together (less padding; same scores).",
)


def _learning_rate(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite number > 0, got {value}")
    return value


_method_option = click.option(
    "--method",
    "-m",
    "methods",
    cls=_MethodOption,
    multiple=True,
    help="Method(s), repeated or comma-separated [default: rollout].",
)


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ehrlens")
def main() -> None:
    """Explain the predictions of attention-based clinical models.

    \b
    A typical session:
      ehrlens synthetic data/                      # or bring your own patients
      ehrlens train --data data/samples.jsonl --schema data/schema.json --out model/
      ehrlens explain --model model/ --data data/samples.jsonl -m rollout,chefer --out attr/
      ehrlens evaluate --model model/ --data data/samples.jsonl -m rollout,random
      ehrlens report --model model/ --data data/samples.jsonl --attributions attr/ \\
          --out report.html --codes data/codes.csv
    """


@main.command()
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
    from ..app.demo import main as run_demo

    run_demo(
        [
            *("--patients", str(patients), "--epochs", str(epochs)),
            *("--explain", str(explain), "--seed", str(seed)),
        ]
    )


@main.command()
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
@_overwrite_option
@handle_errors
@writes("out_dir")
def synthetic(out_dir: Path, patients: int, layout: str, seed: int, overwrite: bool) -> None:
    """Write a synthetic cohort with planted risk codes to OUT_DIR.

    Files: samples.jsonl, events.parquet + labels.csv (the same patients as an event table),
    schema.json, codes.csv (descriptions naming the planted codes), ground_truth.json.
    """
    from ..app.workflow import SYNTHETIC_FILES, write_synthetic_cohort
    from ..core.files import check_overwrite

    check_overwrite([out_dir / name for name in SYNTHETIC_FILES.values()], overwrite)
    files = write_synthetic_cohort(
        out_dir, n_patients=patients, layout=cast("Layout", layout), seed=seed
    )
    for name, path in files.items():
        click.echo(f"{name:13s} {path}")


@main.command()
@_data_option
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help='JSON: {"input_schema": {feature: type}, "output_schema": {label: type}}.',
)
@_labels_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Model directory to create (model.pt + card.json).",
)
@click.option(
    "--model",
    "model_name",
    type=click.Choice(list(model_classes())),
    default="transformer",
    show_default=True,
)
@click.option("--epochs", default=8, type=click.IntRange(min=1), show_default=True)
@click.option(
    "--lr", default=2e-3, callback=_learning_rate, show_default=True, help="Learning rate (> 0)."
)
@click.option("--batch-size", default=64, type=click.IntRange(min=1), show_default=True)
@click.option(
    "--embedding-dim",
    default=64,
    type=click.IntRange(min=1),
    show_default=True,
    help="Width of embeddings; divisible by --heads.",
)
@click.option(
    "--layers",
    default=2,
    type=click.IntRange(min=1),
    show_default=True,
    help="Encoder layers (models with num_layers).",
)
@click.option(
    "--heads", default=4, type=click.IntRange(min=1), show_default=True, help="Attention heads."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the split and training.")
@_size_options
@click.option("--overwrite", is_flag=True, help="Replace an existing model in --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@handle_errors
@writes("out")
def train(
    data: Path,
    schema_path: Path,
    labels: Path | None,
    out: Path,
    model_name: str,
    epochs: int,
    lr: float,
    batch_size: int,
    embedding_dim: int,
    layers: int,
    heads: int,
    seed: int,
    max_steps: int | None,
    max_codes_per_step: int | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Train a model on patients; write a model directory with weights, processors and a
    JSON card of the run (data hash, split, settings, history, test metrics)."""
    from ..app.workflow import read_schema_file, train_model
    from ..core.files import check_overwrite, file_sha256
    from ..data.sources import load_samples
    from ..models.directory import CARD, WEIGHTS, save_model_dir

    if embedding_dim % heads != 0:
        raise click.BadParameter(
            f"--embedding-dim {embedding_dim} must be divisible by --heads {heads}",
            param_hint="'--embedding-dim' / '--heads'",
        )
    message = None  # a card.json alone: the plain message naming it
    if (out / WEIGHTS).exists() and not (out / CARD).exists():
        message = (
            f"{out} holds an incomplete model directory ({WEIGHTS} without {CARD}: a run that "
            "stopped before it finished); pass --overwrite to replace it, or choose a new --out"
        )
    elif (out / WEIGHTS).exists():
        message = (
            f"{out} already holds a model; pass --overwrite to replace it, or choose a new --out"
        )
    check_overwrite([out / WEIGHTS, out / CARD], overwrite, message)
    schema = read_schema_file(schema_path)
    label_key = next(iter(schema["output_schema"]))
    samples = load_samples(
        data, schema["input_schema"], labels=labels, label_key=label_key,
        columns=schema.get("columns"),
    )  # fmt: skip
    hparams: dict[str, Any] = {"embedding_dim": embedding_dim, "heads": heads}
    if "num_layers" in inspect.signature(model_classes()[model_name]).parameters:
        hparams["num_layers"] = layers
    model, card = train_model(
        samples, schema, model=model_name, hparams=hparams, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed, progress=not quiet, max_steps=max_steps,
        max_codes_per_step=max_codes_per_step,
    )  # fmt: skip
    card["data"].update(path=str(data), sha256=file_sha256(data))
    if schema.get("columns"):  # measurement order of numeric event features, kept for scoring
        card["columns"] = schema["columns"]
    if labels is not None:
        card["data"].update(labels=str(labels), labels_sha256=file_sha256(labels))
    save_model_dir(model, out, card)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in card["test_metrics"].items() if v is not None)
    click.echo(f"test: {metrics}")
    click.echo(f"wrote {out / WEIGHTS} and {out / CARD}")


@main.command()
@_model_option
@_data_option
@_labels_option
@_method_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder of Parquet shards (created; an interrupted run resumes there).",
)
@_split_option
@click.option("--batch-size", default=64, type=click.IntRange(min=1), show_default=True)
@click.option(
    "--shard-size",
    default=1000,
    type=click.IntRange(min=1),
    show_default=True,
    help="Patients per shard.",
)
@click.option(
    "--target",
    type=int,
    default=None,
    help="Class to explain (default: positive class / predicted class).",
)
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
    "--seed", default=0, show_default=True, help="Seed of methods that take one (e.g. random)."
)
@_sha256_option
@_bucket_option
@_size_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@handle_errors
def explain(
    model_dir: Path,
    data: Path,
    labels: Path | None,
    methods: tuple[str, ...],
    out: Path,
    split: str,
    batch_size: int,
    shard_size: int,
    target: int | None,
    engine: str,
    address: str | None,
    workers: int | None,
    seed: int,
    model_sha256: str | None,
    bucket: bool,
    max_steps: int | None,
    max_codes_per_step: int | None,
    quiet: bool,
) -> None:
    """Explain every patient with each method; write long-format Parquet attributions
    (patient_id, feature, visit, position, code, score, method, model_id)."""
    import torch

    from ..explain import explain_cohort

    torch.manual_seed(seed)
    names = _methods(methods)
    limits = {"max_steps": max_steps, "max_codes_per_step": max_codes_per_step}
    model, card, dataset, samples = _model_and_data(
        model_dir, data, labels, split, model_sha256, limits
    )
    options = _method_options(names, seed)
    if engine == "ray":
        from ..explain.ray_engine import explain_cohort_ray

        # JSON Lines are read by Ray Data itself; other inputs go as the parsed samples
        source = data if split == "all" and data.suffix.lower() == ".jsonl" else samples
        result = explain_cohort_ray(
            model_dir, source, options, out_dir=out, batch_size=batch_size,
            shard_size=shard_size, target_class_idx=target, address=address,
            num_workers=workers, progress=not quiet, model_sha256=model_sha256,
        )  # fmt: skip
    else:
        result = explain_cohort(
            model, dataset, options, batch_size=batch_size, target_class_idx=target,
            out_dir=out, shard_size=shard_size, model_id=card.get("model_id"),
            progress=not quiet, bucket_by_length=bucket,
        )  # fmt: skip
    click.echo(
        f"{len(dataset)} patients x {len(names)} method(s): {result.num_rows} rows in "
        f"{len(result.shards)} shard(s) under {out} "
        f"({len(result.computed)} computed, {len(result.reused)} already complete)"
    )


@main.command()
@_model_option
@_data_option
@_labels_option
@_method_option
@_split_option
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
@click.option("--seed", default=0, show_default=True)
@_sha256_option
@_bucket_option
@_size_options
@_overwrite_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@handle_errors
@writes("out", "plot")
def evaluate(
    model_dir: Path,
    data: Path,
    labels: Path | None,
    methods: tuple[str, ...],
    split: str,
    batch_size: int,
    ablation: str,
    bootstrap: int,
    out: Path | None,
    plot: Path | None,
    seed: int,
    model_sha256: str | None,
    bucket: bool,
    max_steps: int | None,
    max_codes_per_step: int | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Faithfulness of each method: comprehensiveness and sufficiency with 95% CIs."""
    import torch

    from ..core.files import atomic_write, check_overwrite
    from ..data import get_dataloader
    from ..interpret.registry import make_interpreter
    from ..metrics import Evaluator

    names = _methods(methods)
    check_overwrite([p for p in (out, plot) if p is not None], overwrite)
    torch.manual_seed(seed)
    limits = {"max_steps": max_steps, "max_codes_per_step": max_codes_per_step}
    model, _, dataset, _ = _model_and_data(model_dir, data, labels, split, model_sha256, limits)
    evaluator = Evaluator(
        model,
        ablation=cast("Ablation", ablation),  # a click.Choice of the two
        n_bootstrap=bootstrap,
        seed=seed,
        progress=not quiet,
    )
    results = {}
    for name, options in _method_options(names, seed).items():
        method = make_interpreter(name, model, **options)
        loader = get_dataloader(dataset, batch_size, bucket_by_length=bucket)
        results[name] = evaluator.evaluate(loader, method, name)
    rows = [r.to_dict() for r in results.values()]
    click.echo(_evaluation_table(rows))
    if out is not None:
        with atomic_write(out) as f:
            if out.suffix.lower() == ".csv":
                import csv

                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            else:
                json.dump({"results": rows}, f, indent=2)
        click.echo(f"wrote {out}")
    if plot is not None:
        from ..report.plots import plot_faithfulness_curves

        plot_faithfulness_curves(results, plot)
        click.echo(f"wrote {plot}")


def _evaluation_table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], metric: str) -> str:
        return f"{row[metric]:.3f} [{row[metric + '_low']:.3f}, {row[metric + '_high']:.3f}]"

    header = f"{'method':22s} {'comprehensiveness':>26s} {'sufficiency':>26s} {'s/1000 pts':>10s}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['method']:22s} {cell(row, 'comprehensiveness'):>26s} "
            f"{cell(row, 'sufficiency'):>26s} {row['seconds_per_1000']:>10.2f}"
        )
    return "\n".join(lines)


@main.command()
@_model_option
@_data_option
@_labels_option
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
@_sha256_option
@_size_options
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file and heatmap files.")
@handle_errors
@writes("out", "heatmaps")
def report(
    model_dir: Path,
    data: Path,
    labels: Path | None,
    attributions: Path,
    out: Path,
    codes: Path | None,
    top_k: int,
    max_patients: int,
    heatmaps: Path | None,
    model_sha256: str | None,
    max_steps: int | None,
    max_codes_per_step: int | None,
    overwrite: bool,
) -> None:
    """Write an HTML report: per patient the prediction, a timeline of visits with codes shaded
    by score, the top codes, methods side by side; and the cohort's most influential codes."""
    from ..core.files import check_overwrite, data_file_name
    from ..explain import read_attributions
    from ..explain.consistency import check_attributions_match
    from ..report import patient_predictions, read_descriptions, write_report

    check_overwrite([out], overwrite)
    limits = {"max_steps": max_steps, "max_codes_per_step": max_codes_per_step}
    model, card, dataset, _ = _model_and_data(model_dir, data, labels, "all", model_sha256, limits)
    frame = read_attributions(attributions)
    ids = sorted(set(frame["model_id"]))
    if ids != [card.get("model_id")]:
        raise ValueError(
            f"{attributions} holds attributions of model(s) {ids}, not only of "
            f"{model_dir} (model {card.get('model_id')})"
        )
    check_attributions_match(frame, dataset, model.schema)
    predictions = patient_predictions(model, dataset)
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
    subtitle = f"model {card.get('model_class', '')} {card.get('model_id', '')}"
    write_report(
        out, frame, predictions, descriptions=descriptions, top_k=top_k,
        subtitle=subtitle, patients=chosen,
    )  # fmt: skip
    click.echo(f"wrote {out} ({len(chosen)} of {len(explained)} patients)")
    if heatmaps is not None:
        import csv

        from ..core.files import atomic_write
        from ..report.plots import plot_patient_heatmap

        for pid, path in pictures.items():
            plot_patient_heatmap(frame, pid, path)
        with atomic_write(heatmaps / HEATMAP_INDEX) as f:
            writer = csv.writer(f)
            writer.writerow(["file", "patient_id"])
            writer.writerows((path.name, pid) for pid, path in pictures.items())
        click.echo(f"wrote {len(chosen)} heatmaps under {heatmaps} (patients in {HEATMAP_INDEX})")

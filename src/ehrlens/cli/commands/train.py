"""``ehrlens train``: train a model and write its model directory."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import click

from ..errors import handle_errors, writes
from ..options import (
    LazyChoice,
    MedsRoot,
    data_option,
    labels_option,
    learning_rate,
    meds_options,
    model_names,
    on_bad_rows_option,
    quiet_option,
    size_options,
)
from ..quiet import warn


@click.command()
@data_option
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='JSON: {"input_schema": {feature: type}, "output_schema": {label: type}}; '
    "required except for MEDS data, whose schema follows from the data and the labels.",
)
@labels_option
@meds_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Model directory to create (model.pt + card.json).",
)
@click.option(
    "--model",
    "model_name",
    type=LazyChoice(model_names),
    default=None,
    help="Model to train. Default: code_transformer when patients have visits or time steps "
    "of codes (nested_sequence, stagenet: all MEDS data), since it scores each code; "
    "transformer otherwise.",
)
@click.option("--epochs", default=8, type=click.IntRange(min=1), show_default=True)
@click.option(
    "--lr", default=2e-3, callback=learning_rate, show_default=True, help="Learning rate (> 0)."
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
@click.option(
    "--risk",
    "risk_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV patient_id,risk: each patient's noise-free risk (the risk.csv of `ehrlens "
    "synthetic`); train then prints the test AUROC of that risk, the best any model can reach.",
)
@click.option(
    "--positive-class",
    default=None,
    metavar="NAME",
    help="The value of a binary label that is its positive class (the class the model's "
    "probability is about), e.g. --positive-class high; needed unless the values are 0/1, "
    "false/true or no/yes.",
)
@size_options
@on_bad_rows_option
@click.option(
    "--unsplit-subjects",
    type=click.Choice(["error", "leave-out"]),
    default="error",
    show_default=True,
    help="MEDS: labelled subjects that metadata/subject_splits.parquet does not name are an "
    "error, or left out of training (with a warning counting them).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model in --out.")
@quiet_option
@handle_errors
@writes("out")
def train(
    data: Path | MedsRoot,
    schema_path: Path | None,
    labels: Path | None,
    features: dict[str, list[str]] | None,
    numeric: tuple[str, ...],
    time_bucket: str | None,
    out: Path,
    model_name: str | None,
    epochs: int,
    lr: float,
    batch_size: int,
    embedding_dim: int,
    layers: int,
    heads: int,
    seed: int,
    risk_path: Path | None,
    positive_class: str | None,
    max_steps: int | None,
    max_codes_per_step: int | None,
    on_bad_rows: str,
    unsplit_subjects: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Train a model on patients; write a model directory with weights, processors and a
    JSON card of the run (data hash, split, settings, history, test metrics)."""
    from ...app.task import class_order_text
    from ...app.workflow import (
        DEFAULT_REASON,
        best_achievable_auroc,
        default_model,
        read_risk,
        read_schema_file,
        train_model,
    )
    from ...core.files import check_overwrite, file_sha256
    from ...core.memory import check_fits
    from ...data.sources import load_samples
    from ...models.base import model_class
    from ...models.directory import CARD, WEIGHTS, model_dir_sha256, save_model_dir

    if embedding_dim % heads != 0:
        raise click.BadParameter(
            f"--embedding-dim {embedding_dim} must be divisible by --heads {heads}",
            param_hint="'--embedding-dim' / '--heads'",
        )
    check_fits(  # weights, gradients and two Adam moments of the attention layers alone
        4 * 4 * 12 * layers * embedding_dim**2,
        f"a model of --embedding-dim {embedding_dim:,} and --layers {layers} (at least)",
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
    meds_entry, parts = None, None
    if isinstance(data, MedsRoot):
        from ...app.meds import card_entry, read_for_training, training_parts

        if labels is None:
            raise click.UsageError("--data meds:ROOT needs --labels (MEDS task labels)")
        if schema_path is not None:
            raise click.UsageError("MEDS data set their own schema; drop --schema")
        meds, schema = read_for_training(
            data.root, labels, features=features, numeric=numeric, time_bucket=time_bucket
        )
        samples, parts = meds.samples, training_parts(meds, seed, unsplit_subjects)
        meds_entry = card_entry(meds, data.root, labels)
    else:
        if features or numeric or time_bucket:
            raise click.UsageError("--feature, --numeric and --time-bucket are for meds:ROOT data")
        if schema_path is None:
            raise click.UsageError("--schema is required for JSON Lines and event tables")
        schema = read_schema_file(schema_path)
        samples = load_samples(
            data, schema["input_schema"], labels=labels,
            label_key=next(iter(schema["output_schema"])), columns=schema.get("columns"),
            on_bad_rows=on_bad_rows,
        )  # fmt: skip
    if model_name is None:
        model_name = default_model(schema["input_schema"])
        click.echo(f"model: {model_name} ({DEFAULT_REASON[model_name]}; --model to choose)")
    hparams: dict[str, Any] = {"embedding_dim": embedding_dim, "heads": heads}
    if "num_layers" in inspect.signature(model_class(model_name)).parameters:
        hparams["num_layers"] = layers
    model, card = train_model(
        samples, schema, model=model_name, hparams=hparams, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed, progress=not quiet, max_steps=max_steps,
        max_codes_per_step=max_codes_per_step, parts=parts, positive_class=positive_class,
    )  # fmt: skip
    if meds_entry is not None:
        card["meds"] = meds_entry
        card["data"].update(path=f"meds:{data}", sha256=meds_entry["sha256"])
    else:
        card["data"].update(path=str(data), sha256=file_sha256(Path(data)))
    if schema.get("columns"):  # measurement order of numeric event features, kept for scoring
        card["columns"] = schema["columns"]
    if labels is not None and meds_entry is None:
        card["data"].update(labels=str(labels), labels_sha256=file_sha256(labels))
    if risk_path is not None:
        best = best_achievable_auroc(
            model, samples, card["data"]["split"]["patient_ids"]["test"], read_risk(risk_path)
        )
        card["best_achievable"] = {"roc_auc": best, "risk": str(risk_path)}
    save_model_dir(model, out, card)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in card["test_metrics"].items() if v is not None)
    click.echo(f"test: {metrics}")
    if "best_achievable" in card:
        click.echo(
            f"best achievable test roc_auc {card['best_achievable']['roc_auc']:.3f} (the "
            "noise-free risk of --risk; chance 0.5)"
        )
    for warning in card.get("warnings", []):
        warn(warning)
    order = class_order_text(card["task"])
    if order is not None:
        click.echo(order)
    click.echo(f"wrote {out / WEIGHTS} and {out / CARD}")
    click.echo(f"model directory SHA-256 (for --model-sha256): {model_dir_sha256(out)}")

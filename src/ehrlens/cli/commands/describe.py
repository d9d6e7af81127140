"""``ehrlens describe``: what a model directory holds, read from its card and processors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import handle_errors
from ..options import model_option, sha256_option


@click.command()
@model_option
@sha256_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def describe(model_dir: Path, model_sha256: str | None, as_json: bool) -> None:
    """Describe a trained model: its class and id, the features it reads, the label and its
    classes in output order (what `explain --target` takes, by name or index), the data it was
    trained on and its test metrics, each with the direction that is better."""
    import json

    from ...app.task import card_classes
    from ...metrics.prediction import LOWER_IS_BETTER
    from ...models.directory import load_model_dir

    model, card = load_model_dir(model_dir, expected_sha256=model_sha256)
    task = dict(card.get("task") or {})
    label, processor = next(iter(model.schema.output_processors.items()))
    task.setdefault("label", label)
    task.setdefault("mode", processor.schema)
    task["classes"] = card_classes(card, model)
    if task["mode"] == "binary" and task["classes"] and len(task["classes"]) == 2:
        task.setdefault("positive_class", task["classes"][1])
    data = card.get("data", {})
    summary: dict[str, Any] = {
        "model": card.get("model_class", type(model).__name__),
        "model_id": card.get("model_id"),
        "features": model.schema.input_schema,
        "task": task,
        "data": {k: data.get(k) for k in ("path", "n_patients", "n_train", "n_val", "n_test")},
        "test_metrics": card.get("test_metrics", {}),
        "warnings": card.get("warnings", []),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"model      {summary['model']} {summary['model_id'] or ''}".rstrip())
    features = ", ".join(f"{k} ({v})" for k, v in summary["features"].items())
    click.echo(f"features   {features}")
    click.echo(f"label      {task['label']} ({task['mode']})")
    if task["classes"]:
        listed = ", ".join(f"{i}: {name}" for i, name in enumerate(task["classes"]))
        click.echo(f"classes    {listed}   (output order; --target takes a name or index)")
        if task.get("positive_class") is not None:
            click.echo(
                f"positive   {task['positive_class']}   (the class the model's probability is "
                "about; explained by default)"
            )
    sizes = summary["data"]
    if sizes.get("n_patients") is not None:
        click.echo(
            f"data       {sizes['n_patients']} patients (train {sizes['n_train']}, val "
            f"{sizes['n_val']}, test {sizes['n_test']})"
            + (f" from {sizes['path']}" if sizes.get("path") else "")
        )
    metrics = summary["test_metrics"]
    if metrics:
        click.echo("test metrics:")
        for name, value in metrics.items():
            better = "lower is better" if name in LOWER_IS_BETTER else "higher is better"
            shown = "n/a" if value is None else f"{value:.3f}"
            click.echo(f"  {name:14s} {shown:>7s}   ({better})")
    for warning in summary["warnings"]:
        click.echo(f"warning: {warning}")

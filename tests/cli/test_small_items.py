"""Small command-line promises: -q everywhere it is documented, an unknown --target is bad
usage (exit 2), help text that does not break an example, load_model_dir where the README
says."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ehrlens.app.task import resolve_target
from ehrlens.cli.app import main
from ehrlens.cli.errors import EXIT_USAGE, handle_errors
from ehrlens.core.errors import UsageValueError


@pytest.mark.parametrize("command", ["report", "synthetic", "train", "explain", "evaluate"])
def test_quiet_is_an_option_of_every_writing_command(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "-q, --quiet" in result.stdout


def test_a_class_the_model_lacks_is_bad_usage():
    with pytest.raises(UsageValueError, match=r"--target 2 is out of range.*0: low, 1: high"):
        resolve_target("2", ["low", "high"])
    with pytest.raises(ValueError, match="'medium' is not a class"):  # still a ValueError
        resolve_target("medium", ["low", "high"])

    @click.command()
    @handle_errors
    def pick() -> None:
        resolve_target("2", ["0", "1"])

    result = CliRunner().invoke(pick, [])
    assert result.exit_code == EXIT_USAGE == 2
    assert "error: --target 2 is out of range; classes in output order: 0: 0, 1: 1" in (
        result.stderr
    )


def test_explain_help_keeps_the_method_example_whole():
    text = CliRunner().invoke(main, ["explain", "--help"], terminal_width=80).stdout
    assert "e.g. -m rollout:head_fusion=max,flow:max_seq_len=512" in text


def test_load_model_dir_is_importable_from_models():
    from ehrlens.models import load_model_dir, save_model_dir
    from ehrlens.models.directory import load_model_dir as same

    assert load_model_dir is same and callable(save_model_dir)


def test_train_prints_the_best_achievable_auroc_of_a_synthetic_cohort(tmp_path):
    runner = CliRunner()
    data = tmp_path / "data"
    assert runner.invoke(main, ["synthetic", str(data), "--patients", "80", "-q"]).exit_code == 0
    assert (data / "risk.csv").exists()
    result = runner.invoke(
        main,
        ["train", "--data", str(data / "samples.jsonl"), "--schema", str(data / "schema.json"),
         "--out", str(tmp_path / "m"), "--risk", str(data / "risk.csv"), "--epochs", "1",
         "--embedding-dim", "8", "--layers", "1", "--heads", "2", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("best achievable"))
    assert line.startswith("best achievable test roc_auc 0.") and "chance 0.5" in line

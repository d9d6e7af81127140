"""A method written outside the library (one class + one registration) works by name
everywhere: make_interpreter, explain_cohort, `ehrlens explain` / `evaluate` and their help."""

from __future__ import annotations

import re
from typing import ClassVar

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ehrlens.cli.app import main
from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import explain_cohort, read_attributions
from ehrlens.interpret import (
    METHODS,
    AttentionInterpretable,
    BaseInterpreter,
    make_interpreter,
    register_method,
    unregister_method,
)
from ehrlens.models import Transformer
from ehrlens.models.directory import save_model_dir


class PositionScores(BaseInterpreter):
    """Scores each real unit ``offset + 1 + its index along the last input axis``."""

    name = "toy_positions"
    gradient_free = True
    needs = (AttentionInterpretable,)
    summary = "toy: one more than each unit's position"

    #: ``torch.is_inference_mode_enabled()`` at each call, for the tests.
    modes: ClassVar[list[bool]] = []

    def __init__(self, model, offset: float = 0.0) -> None:
        super().__init__(model)
        self.offset = float(offset)

    def attribute(self, target_class_idx=None, **batch):
        PositionScores.modes.append(torch.is_inference_mode_enabled())
        out = {}
        for key in self.model.feature_keys:
            values = batch[key]
            position = torch.arange(values.shape[-1], dtype=torch.float32) + 1 + self.offset
            scores = position.expand(values.shape).clone()
            if not values.is_floating_point():
                scores = scores * (values != 0)  # code padding (id 0) scores 0
            out[key] = scores
        return out


@pytest.fixture
def toy():
    """The one registration; removed afterwards so other tests see the built-ins only."""
    register_method(PositionScores)
    PositionScores.modes.clear()
    yield PositionScores
    unregister_method(PositionScores.name)


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(n_patients=24, layout="nested", seed=5, include_labs=True)


@pytest.fixture(scope="module")
def dataset(cohort):
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


@pytest.fixture(scope="module")
def model(dataset):
    torch.manual_seed(0)
    return Transformer(dataset, embedding_dim=8, heads=2, num_layers=1, dropout=0.0).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, cohort, model):
    root = tmp_path_factory.mktemp("toy")
    save_model_dir(model, root / "model")
    return root / "model", write_jsonl(cohort.samples, root / "samples.jsonl")


def check_position_rows(frame: pd.DataFrame, offset: float) -> None:
    """Each row's score is ``offset + 1 + position``, derived from the row itself."""
    assert len(frame) > 0
    expected = offset + 1 + frame["position"].astype(float)
    pd.testing.assert_series_equal(frame["score"], expected, check_names=False, check_exact=True)


def unit_keys(frame: pd.DataFrame) -> list[tuple]:
    return sorted(
        frame[["patient_id", "feature", "visit", "position"]]
        .astype(str)
        .itertuples(index=False, name=None)
    )


def test_toy_by_name_in_the_python_api(toy, dataset, model):
    interpreter = make_interpreter("toy_positions", model, offset=0.5)
    assert type(interpreter) is PositionScores and interpreter.get_params() == {"offset": 0.5}
    assert METHODS["toy_positions"].gradient_free is True

    frame = explain_cohort(model, dataset, ["toy_positions", "random"], batch_size=5).to_frame()
    toy_rows = frame[frame["method"] == "toy_positions"].reset_index(drop=True)
    check_position_rows(toy_rows, offset=0.0)
    # one row per real input unit: the same units as the built-in random baseline scores
    assert unit_keys(toy_rows) == unit_keys(frame[frame["method"] == "random"])
    assert PositionScores.modes == [True] * 5  # 24 patients in batches of 5, inference mode

    options = {"toy_positions": {"offset": 0.5}}
    check_position_rows(explain_cohort(model, dataset, options).to_frame(), offset=0.5)


def test_toy_by_name_on_the_command_line(toy, files, tmp_path):
    model_dir, data = files
    out = tmp_path / "attr"
    args = ["explain", "--model", model_dir, "--data", data, "-m", "toy_positions,rollout"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--out", out, "-q"]])
    assert result.exit_code == 0, result.output
    frame = read_attributions(out)
    assert set(frame["method"]) == {"toy_positions", "rollout"}
    check_position_rows(frame[frame["method"] == "toy_positions"].reset_index(drop=True), 0.0)

    evaluate = ["evaluate", "--model", model_dir, "--data", data, "-m", "toy_positions"]
    result = CliRunner().invoke(main, [str(a) for a in [*evaluate, "--bootstrap", "5", "-q"]])
    assert result.exit_code == 0, result.output
    assert re.search(r"^toy_positions\s+-?\d", result.stdout, re.M)


def help_lines(command: str) -> str:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_help_lists_the_registered_methods_with_their_summaries(toy):
    for command in ("explain", "evaluate"):
        text = help_lines(command)
        for name, info in METHODS.items():
            assert re.search(rf"^\s+{name}\s+{re.escape(info.summary)}$", text, re.M), name
        assert re.search(r"toy_positions\s+toy: one more than each unit's position", text)


def test_help_and_choices_forget_an_unregistered_method(files, tmp_path):
    assert "toy_positions" not in METHODS
    assert "toy_positions" not in help_lines("explain")
    model_dir, data = files
    args = ["explain", "--model", model_dir, "--data", data, "-m", "toy_positions"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--out", tmp_path / "a"]])
    assert result.exit_code == 2
    assert "unknown method 'toy_positions'; choose from rollout, flow" in result.stderr

"""A model whose outputs are NaN or infinite is never explained.

Issue "Eighteen more ways the promises break", item 4: with the output bias set to NaN,
rollout, Chefer, AttnLRP and input x gradient returned finite scores and ``explain`` exited 0
(the report then showed "predicted risk nan"). Every method now checks the model's outputs on
every forward it runs (one shared check) and refuses, naming the patients.
"""

from __future__ import annotations

import pytest
import torch
from _cli_kit import invoke
from _robustness_kit import MODEL_METHODS, make_dataset, make_model, make_samples

from ehrlens.explain import explain_cohort
from ehrlens.interpret import AttnLRP
from ehrlens.models.directory import save_model_dir

#: Every method that runs the model, AttnLRP included.
METHODS = {**{m: m for m in MODEL_METHODS}, "attnlrp": "attnlrp"}


def _nan_bias(model):
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    return model


def _poisoned_code(model, dataset, code: str = "C7"):
    """The embedding of ``code`` in feature ``codes`` is NaN: only patients with it are hit."""
    index = dataset.input_processors["codes"].vocabulary.code_to_id[code]
    with torch.no_grad():
        model.embeddings["codes"].unit.weight[index] = float("nan")
    return model


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


def _interpreter(name, model):
    from _robustness_kit import METHODS as BUILDERS

    return AttnLRP(model) if name == "attnlrp" else BUILDERS[name](model)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_item_4_every_method_refuses_a_nan_output_naming_the_patients(dataset, method):
    model = _nan_bias(make_model("Transformer", dataset))
    batch = dataset.collate([dataset[i] for i in range(4)])
    with pytest.raises(ValueError, match=r"output 'logit' is NaN or infinite for 4 patient\(s\)"):
        _interpreter(method, model).attribute(None, **batch)
    assert not model._forward_hooks  # the check leaves no hook behind


@pytest.mark.parametrize("method", ["rollout", "chefer", "integrated_gradients", "attnlrp"])
def test_item_4_only_the_patients_with_nan_outputs_are_named(method):
    """Only patients whose codes include the poisoned one are named (integrated gradients'
    stacked interpolation steps are mapped back to the patient)."""
    samples = make_samples(6)
    for sample in samples:
        sample["codes"] = [c for c in sample["codes"] if c != "C7"] or ["C1"]
    samples[0]["codes"] = ["C1", "C7"]
    samples[3]["codes"] = ["C7"]
    data = make_dataset(samples)
    model = _poisoned_code(make_model("Transformer", data), data)
    batch = data.collate([data[i] for i in range(6)])
    with pytest.raises(ValueError, match=r"for 2 patient\(s\): \['p0', 'p3'\]"):
        _interpreter(method, model).attribute(None, **batch)


def test_item_4_the_engine_refuses_and_writes_no_rows(dataset, tmp_path):
    model = _nan_bias(make_model("Transformer", dataset))
    with pytest.raises(ValueError, match=r"NaN or infinite for .*\['p0'"):
        explain_cohort(model, dataset, ["rollout", "chefer"], out_dir=tmp_path / "attr")
    assert not (tmp_path / "attr").exists()


@pytest.mark.slow
def test_item_4_the_command_line_exits_1_naming_the_patients(tmp_path):
    """A model directory saved with a NaN bias: ``explain`` exits 1 naming the patients."""
    from ehrlens.core.jsonl import write_jsonl

    samples = make_samples(6)
    data = make_dataset(samples)
    model_dir = save_model_dir(_nan_bias(make_model("Transformer", data)), tmp_path / "model")
    path = write_jsonl(samples, tmp_path / "samples.jsonl")
    for method in ("rollout", "input_x_gradient"):
        result = invoke(
            "explain", "--model", model_dir, "--data", path, "-m", method,
            "--out", tmp_path / method, "-q", expect=1,
        )  # fmt: skip
        assert "NaN or infinite for 6 patient(s)" in result.stderr, result.stderr
        assert not (tmp_path / method).exists()


def test_check_finite_outputs_reference_cases():
    """Hand-built outputs: finite passes; rows map to ids directly and modulo a stacked batch."""
    from ehrlens.interpret.outputs import check_finite_outputs

    check_finite_outputs({"logit": torch.zeros(3, 2)}, ["a", "b", "c"])
    nan, inf = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"1 patient\(s\): \['b'\]"):
        check_finite_outputs({"logit": torch.tensor([[0.0], [nan], [1.0]])}, ["a", "b", "c"])
    stacked = torch.zeros(6, 1)
    stacked[5] = inf  # step 2 of patient "c"
    with pytest.raises(ValueError, match=r"\['c'\]"):
        check_finite_outputs(stacked, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"batch row\(s\) \[1\]"):
        check_finite_outputs((torch.tensor([[0.0], [nan]]),), None)

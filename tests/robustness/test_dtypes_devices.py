"""Low-precision models and device mismatches.

float16 / bfloat16 models: every method gives finite scores, returned in float32 (relevance is
propagated in at least float32), close to the float32 model's. A batch on another device than
the model is refused with an error naming the feature and the fix (``move_to_device``); it
is never moved silently. No GPU is needed: the ``meta`` device stands in for "another device".
"""

from __future__ import annotations

import pytest
import torch
from _robustness_kit import (
    ATTENTION_METHODS,
    METHODS,
    MODEL_METHODS,
    MODELS,
    make_dataset,
    make_model,
)

from ehrlens.data import move_to_device


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


@pytest.fixture(scope="module")
def batch(dataset):
    return dataset.collate(dataset.items)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", MODELS)
def test_low_precision_models_give_finite_float32_scores_close_to_float32(
    dataset, batch, name, method, dtype
):
    reference = METHODS[method](make_model(name, dataset)).attribute(**batch)
    model = make_model(name, dataset).to(dtype)
    assert model.device.type == "cpu" and next(model.parameters()).dtype == dtype
    scores = METHODS[method](model).attribute(**batch)
    for key, value in scores.items():
        assert value.dtype == torch.float32, key
        assert bool(torch.isfinite(value).all()), key
        expected = reference[key]
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        # low-precision maps and activations: a few bf16 ulps of the largest score
        torch.testing.assert_close(
            value, expected, atol=0.03 * scale + 2e-3, rtol=0.0, msg=lambda m, k=key: f"{k}: {m}"
        )
        if method in ATTENTION_METHODS:
            assert bool((value >= 0).all()), key


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_rollout_still_sums_to_one_at_the_readout(dataset, batch, dtype):
    """StageAttentionNet reads out at a real step: its rollout row sums to 1 over the inputs."""
    model = make_model("StageAttentionNet", dataset).to(dtype)
    scores = METHODS["rollout"](model).attribute(**batch)
    codes = scores["codes"].sum(dim=1)
    torch.testing.assert_close(codes, torch.ones_like(codes), atol=1e-2, rtol=0)


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_float64_models_give_float64_attention_scores(dataset, batch, method):
    model = make_model("Transformer", dataset).double()
    scores = METHODS[method](model).attribute(**batch)
    expected = torch.float32 if "gradient" in method else torch.float64
    assert all(v.dtype == expected for v in scores.values())


# ----------------------------------------------------------------------------- devices


@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_a_model_on_another_device_than_the_batch_is_an_error(dataset, batch, name, method):
    model = make_model(name, dataset).to("meta")
    with pytest.raises(ValueError) as info:
        METHODS[method](model).attribute(**batch)
    message = str(info.value)
    assert "feature 'codes' is on cpu but the model is on meta" in message
    assert "move_to_device(batch, model.device)" in message


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_a_batch_on_another_device_than_the_model_is_an_error(dataset, batch, method):
    model = make_model("Transformer", dataset)
    on_meta = {**batch, "visits": batch["visits"].to("meta")}
    with pytest.raises(ValueError, match=r"feature 'visits' is on meta but the model is on cpu"):
        METHODS[method](model).attribute(**on_meta)


@pytest.mark.parametrize("group", ["masks", "times"])
def test_masks_and_times_on_another_device_are_an_error(dataset, batch, group):
    model = make_model("StageAttentionNet", dataset)
    key = "labs" if group == "masks" else "steps"
    moved = {**batch, group: {**batch[group], key: batch[group][key].to("meta")}}
    with pytest.raises(ValueError, match=rf"feature '{key}': batch\['{group}'\]\['{key}'\] is on"):
        METHODS["rollout"](model).attribute(**moved)


def test_move_to_device_is_the_documented_fix(dataset, batch):
    """The hint in the error works: the moved batch is accepted and explained the same."""
    model = make_model("Transformer", dataset)
    moved = move_to_device(batch, model.device)
    scores = METHODS["rollout"](model).attribute(**moved)
    expected = METHODS["rollout"](model).attribute(**batch)
    for key in expected:  # the same tensors on the same device: the same computation
        assert torch.equal(scores[key], expected[key])

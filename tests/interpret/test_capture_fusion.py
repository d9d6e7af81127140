"""Forward-only capture fused over heads stores [batch, 1, seq, seq] equal to fusing later."""

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.interpret import capture_attention
from ehrlens.models import Transformer


@pytest.fixture(scope="module")
def model_and_batch():
    cohort = generate_cohort(n_patients=12, layout="sequence", seed=3)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=4, num_layers=2).eval()
    return model, next(iter(get_dataloader(dataset, batch_size=6)))


@pytest.mark.parametrize(
    ("fusion", "reduce"),
    [
        ("mean", lambda a: a.mean(1)),
        ("max", lambda a: a.amax(1)),
        ("min", lambda a: a.amin(1)),
    ],
)
def test_fused_capture_equals_fusing_per_head_maps(model_and_batch, fusion, reduce):
    model, batch = model_and_batch
    with torch.inference_mode():
        with capture_attention(model, batch):
            per_head = model.get_attention_layers()
        with capture_attention(model, batch, head_fusion=fusion):
            fused = model.get_attention_layers()
    for key in per_head:
        for (full, _), (small, grad) in zip(per_head[key], fused[key], strict=True):
            assert full.shape[1] == 4 and small.shape[1] == 1 and grad is None
            torch.testing.assert_close(small[:, 0], reduce(full), rtol=0, atol=0)


def test_fused_capture_is_forward_only(model_and_batch):
    model, batch = model_and_batch
    with pytest.raises(ValueError, match="forward-only"):
        with capture_attention(model, batch, gradients=True, head_fusion="mean"):
            pass
    with pytest.raises(ValueError, match="forward-only"):
        model.set_attention_hooks(True, capture_gradients=True, head_fusion="mean")
    model.set_attention_hooks(False)
    assert not any(m.has_attention_hooks for ms in model.attention_modules().values() for m in ms)


def test_unknown_fusion_is_refused(model_and_batch):
    model, _ = model_and_batch
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        model.set_attention_hooks(True, capture_gradients=False, head_fusion="median")
    model.set_attention_hooks(False)


def test_discard_count_follows_python_float_arithmetic():
    from ehrlens.interpret.methods.rollout import discard_lowest

    # 100 distinct off-diagonal candidates in row 0; floor(0.29 * 100) == 28 in Python.
    size = 101
    weights = torch.arange(1, size + 1, dtype=torch.float32)
    attention = (weights / weights.sum()).expand(1, size, size).clone()
    pruned = discard_lowest(attention, 0.29)
    dropped = int((pruned[0, 0] == 0).sum())
    assert dropped == int(0.29 * 100) == 28

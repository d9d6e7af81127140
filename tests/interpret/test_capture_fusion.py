"""Forward-only capture fused over heads stores [batch, 1, seq, seq] equal to fusing later."""

import copy

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
    # Fused capture computes the map in blocks of query rows, so float32 may differ from the
    # whole-map product in the last bit; float64 shows that only rounding differs.
    model, batch = model_and_batch
    model = copy.deepcopy(model).double()
    with torch.inference_mode():
        with capture_attention(model, batch):
            per_head = model.get_attention_layers()
        with capture_attention(model, batch, head_fusion=fusion):
            fused = model.get_attention_layers()
    for key in per_head:
        for (full, _), (small, grad) in zip(per_head[key], fused[key], strict=True):
            assert full.shape[1] == 4 and small.shape[1] == 1 and grad is None
            assert small.dtype == torch.float64
            torch.testing.assert_close(small[:, 0], reduce(full), rtol=0, atol=1e-15)


def test_fused_capture_never_forms_a_layers_per_head_map_whole(model_and_batch):
    model, batch = model_and_batch
    rows_seen: dict[int, list[tuple[int, int]]] = {}
    modules = [m for ms in model.attention_modules().values() for m in ms]
    for index, module in enumerate(modules):

        def spy(q, k, mask, _original=module.attention_weights, _index=index):
            rows_seen.setdefault(_index, []).append((q.shape[2], k.shape[2]))
            return _original(q, k, mask)

        module.attention_weights = spy
    try:
        with torch.inference_mode(), capture_attention(model, batch, head_fusion="mean"):
            fused = [a for layers in model.get_attention_layers().values() for a, _ in layers]
    finally:
        for module in modules:
            del module.attention_weights
    assert sorted(rows_seen) == list(range(len(modules)))
    for index, attention in enumerate(fused):
        seq = attention.shape[-1]
        assert seq > 1  # so a single block would be the whole map
        assert all(rows < keys == seq for rows, keys in rows_seen[index])
        assert sum(rows for rows, _ in rows_seen[index]) == seq


def test_fused_capture_forward_gives_the_models_output(model_and_batch):
    model, batch = model_and_batch
    with torch.inference_mode():
        plain = model(**batch)["logit"]
        with capture_attention(model, batch, head_fusion="mean") as forward:
            captured = forward.outputs["logit"]
    torch.testing.assert_close(captured, plain, rtol=0, atol=1e-6)


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


def test_whole_map_fused_capture_equals_fusing_per_head_maps_bit_for_bit(model_and_batch):
    model, batch = model_and_batch
    with torch.inference_mode():
        with capture_attention(model, batch):
            per_head = model.get_attention_layers()
        with capture_attention(model, batch, head_fusion="mean", whole_maps=True):
            fused = model.get_attention_layers()
    for key in per_head:
        for (full, _), (small, _) in zip(per_head[key], fused[key], strict=True):
            assert small.shape[1] == 1
            # the same whole maps, then the same mean: exact by construction
            torch.testing.assert_close(small[:, 0], full.mean(1), rtol=0, atol=0)

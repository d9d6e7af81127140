"""MultiHeadAttention: attention hooks, key padding, handle removal; model-level capture."""

from __future__ import annotations

import pytest
import torch

from ehrlens.data import create_sample_dataset
from ehrlens.models import MultiHeadAttention


def _inputs(batch: int = 3, seq: int = 5, dim: int = 8):
    torch.manual_seed(0)
    x = torch.randn(batch, seq, dim)
    lengths = torch.tensor([5, 3, 1])[:batch]
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    return x, mask


def test_hook_receives_row_stochastic_maps_with_zero_weight_on_padding():
    mha = MultiHeadAttention(dim=8, heads=2)
    x, mask = _inputs()
    seen = []
    handle = mha.register_attention_hook(lambda module, attn: seen.append((module, attn)))
    assert mha.has_attention_hooks
    out = mha(x, mask)
    assert out.shape == (3, 5, 8)
    assert len(seen) == 1
    module, attn = seen[0]
    assert module is mha
    assert attn.shape == (3, 2, 5, 5)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 2, 5), atol=1e-6)
    assert torch.all(attn >= 0)
    padded_keys = ~mask[:, None, None, :].expand_as(attn)
    assert torch.all(attn[padded_keys] == 0)  # exactly zero, not merely small
    assert torch.all(attn[~padded_keys] > 0)
    handle.remove()


def test_handle_remove_unregisters_the_hook():
    mha = MultiHeadAttention(dim=8, heads=2)
    x, mask = _inputs()
    calls = []
    handle = mha.register_attention_hook(lambda module, attn: calls.append(attn.shape))
    mha(x, mask)
    handle.remove()
    assert not mha.has_attention_hooks
    mha(x, mask)
    assert calls == [torch.Size([3, 2, 5, 5])]


def test_removing_one_hook_keeps_the_others():
    mha = MultiHeadAttention(dim=8, heads=4)
    x, mask = _inputs()
    first, second = [], []
    h1 = mha.register_attention_hook(lambda m, a: first.append(a))
    h2 = mha.register_attention_hook(lambda m, a: second.append(a))
    mha(x, mask)
    h1.remove()
    assert mha.has_attention_hooks
    mha(x, mask)
    assert len(first) == 1
    assert len(second) == 2
    assert second[0].shape == (3, 4, 5, 5)
    h2.remove()
    assert not mha.has_attention_hooks


def test_hook_sees_weights_before_dropout():
    mha = MultiHeadAttention(dim=8, heads=2, dropout=0.5).train()
    x, mask = _inputs()
    seen = []
    mha.register_attention_hook(lambda m, a: seen.append(a))
    torch.manual_seed(1)
    mha(x, mask)
    assert torch.allclose(seen[0].sum(-1), torch.ones(3, 2, 5), atol=1e-6)


def test_padding_does_not_change_real_positions():
    mha = MultiHeadAttention(dim=8, heads=2).eval()
    x, mask = _inputs()
    with torch.no_grad():
        full = mha(x, mask)
        # Sample 1 alone, cut to its 3 real positions.
        alone = mha(x[1:2, :3], mask[1:2, :3])
    assert torch.allclose(full[1:2, :3], alone, atol=1e-6)


def test_row_without_real_keys_stays_finite():
    mha = MultiHeadAttention(dim=8, heads=2)
    x = torch.randn(1, 4, 8)
    seen = []
    mha.register_attention_hook(lambda m, a: seen.append(a))
    out = mha(x, torch.zeros(1, 4, dtype=torch.bool))
    assert torch.all(torch.isfinite(out))
    assert torch.all(torch.isfinite(seen[0]))


def _long_inputs(batch: int = 3, seq: int = 11, dim: int = 8, dtype=torch.float64):
    torch.manual_seed(2)
    x = torch.randn(batch, seq, dim, dtype=dtype)
    lengths = torch.tensor([seq, 7, 1])[:batch]
    return x, torch.arange(seq)[None, :] < lengths[:, None]


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_block_hooks_see_every_query_row_once_in_order(heads):
    mha = MultiHeadAttention(dim=8, heads=heads).double().eval()
    x, mask = _long_inputs()
    full = []
    handle = mha.register_attention_hook(lambda m, a: full.append(a))
    with torch.no_grad():
        plain_out = mha(x, mask)
    handle.remove()
    blocks = []
    handle = mha.register_attention_block_hook(lambda m, rows, a: blocks.append((rows, a)))
    with torch.no_grad():
        blocked_out = mha(x, mask)
    handle.remove()
    step = -(-11 // (2 * heads))  # ceil(seq / (2 * heads)); far below block_values here
    assert mha.attention_block_rows(3, 11) == step
    assert [(r.start, r.stop) for r, _ in blocks] == [
        (start, min(start + step, 11)) for start in range(0, 11, step)
    ]
    for rows, weights in blocks:
        assert weights.shape == (3, heads, rows.stop - rows.start, 11)
        torch.testing.assert_close(weights, full[0][:, :, rows], rtol=0, atol=1e-12)
    torch.testing.assert_close(blocked_out, plain_out, rtol=0, atol=1e-12)


def test_blocks_are_bounded_by_half_a_fused_map_and_by_block_values():
    mha = MultiHeadAttention(dim=8, heads=4)
    assert mha.attention_block_rows(32, 1024) == (1 << 22) // (32 * 4 * 1024) == 32
    assert mha.attention_block_rows(1, 64) == 8  # ceil(64 / 8): half a fused map
    assert mha.attention_block_rows(64, 1 << 15) == 1  # never fewer than one row
    mha.block_values = 2 * (4 * 4 * 11)  # two rows of 11 keys, batch 4, 4 heads
    assert mha.attention_block_rows(4, 11) == 2


def test_block_hooks_get_one_block_when_a_map_hook_also_listens():
    mha = MultiHeadAttention(dim=8, heads=4).double().eval()
    x, mask = _long_inputs()
    maps, blocks = [], []
    h1 = mha.register_attention_hook(lambda m, a: maps.append(a))
    h2 = mha.register_attention_block_hook(lambda m, rows, a: blocks.append((rows, a)))
    assert mha.has_attention_hooks
    with torch.no_grad():
        mha(x, mask)
    h1.remove()
    h2.remove()
    assert not mha.has_attention_hooks
    assert len(blocks) == 1 and blocks[0][0] == slice(0, 11)
    assert blocks[0][1] is maps[0]


def test_dim_must_be_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(dim=10, heads=3)


@pytest.mark.parametrize("name", ["Transformer", "StageAttentionNet"])
def test_models_expose_their_attention_modules(make_tiny_model, name):
    samples = [
        {"patient_id": "a", "codes": ["A", "B", "C"], "y": 1},
        {"patient_id": "b", "codes": ["B"], "y": 0},
    ]
    ds = create_sample_dataset(samples, {"codes": "sequence"}, {"y": "binary"})
    model = make_tiny_model(name, ds).eval()
    modules = model.attention_modules()
    assert list(modules) == ["codes"]
    assert all(isinstance(m, MultiHeadAttention) for m in modules["codes"])
    maps = []
    handle = modules["codes"][0].register_attention_hook(lambda m, a: maps.append(a))
    with torch.no_grad():
        model(**ds.collate(ds.items))
    handle.remove()
    # Transformer: [CLS] + 3 codes; StageAttentionNet: the 3 steps.
    seq = 4 if name == "Transformer" else 3
    assert maps[0].shape == (2, 2, seq, seq)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, seq), atol=1e-6)
    # Patient b has one real code: the padded code positions get exactly zero weight.
    assert torch.all(maps[0][1, :, :, seq - 2 :] == 0)
    assert not any(m.has_attention_hooks for m in modules["codes"])


def test_a_forward_seen_only_by_query_key_hooks_is_computed_in_blocks():
    mha = MultiHeadAttention(dim=8, heads=4).double().eval()
    x, mask = _long_inputs()
    with torch.no_grad():
        plain = mha(x, mask)
    rows = []
    original = mha.attention_weights
    mha.attention_weights = lambda q, k, m: rows.append(q.shape[2]) or original(q, k, m)
    handle = mha.register_query_key_hook(lambda m, q, k, mask: None)
    with torch.no_grad():
        blocked = mha(x, mask)
    handle.remove()
    assert rows == [2] * 5 + [1]  # ceil(11 / 8) = 2 rows a block
    torch.testing.assert_close(blocked, plain, rtol=0, atol=1e-12)

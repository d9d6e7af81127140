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


def test_a_forward_seen_only_by_query_key_and_logsumexp_hooks_forms_no_map():
    mha = MultiHeadAttention(dim=8, heads=4).double().eval()
    x, mask = _long_inputs()
    with torch.no_grad():
        plain = mha(x, mask)
    rows = []
    original = mha.attention_weights
    mha.attention_weights = lambda q, k, m: rows.append(q.shape[2]) or original(q, k, m)
    kept = {}
    handles = [
        mha.register_query_key_hook(lambda m, q, k, mask: kept.update(q=q, k=k)),
        mha.register_logsumexp_hook(lambda m, lse: kept.update(lse=lse)),
    ]
    with torch.no_grad():
        fused = mha(x, mask)
    for handle in handles:
        handle.remove()
    assert rows == []  # no map, not even a block of one
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-12)
    scores = kept["q"] @ kept["k"].transpose(-2, -1) / 2**0.5  # head_dim 2
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    torch.testing.assert_close(kept["lse"], scores.logsumexp(-1), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- SDPA path
def _reference_attention(mha: MultiHeadAttention, x: torch.Tensor, mask: torch.Tensor):
    """The explicit formula, written out independently: per head
    ``softmax(q k^T / sqrt(d)) v`` over the real keys only (a sample without real keys
    attends to nothing), then the output projection. Returns ``(output, weights)``."""
    batch, seq, dim = x.shape
    q, k, v = mha.qkv(x).split(dim, dim=-1)
    heads, d = mha.heads, mha.head_dim
    out = torch.zeros(batch, seq, dim, dtype=x.dtype)
    weights = torch.zeros(batch, heads, seq, seq, dtype=x.dtype)
    for b in range(batch):
        real = mask[b].nonzero()[:, 0]
        if len(real) == 0:
            continue
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            scores = q[b, :, cols] @ k[b, real, cols].T / d**0.5
            w = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
            w = w / w.sum(dim=-1, keepdim=True)
            weights[b, h][:, real] = w
            out[b, :, cols] = w @ v[b, real, cols]
    return mha.proj(out), weights


def _padded_inputs(batch: int = 4, seq: int = 7, dim: int = 8):
    torch.manual_seed(3)
    x = torch.randn(batch, seq, dim, dtype=torch.float64)
    lengths = torch.tensor([7, 4, 1, 0])[:batch]  # the last sample has no real key at all
    return x, torch.arange(seq)[None, :] < lengths[:, None]


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_forward_without_hooks_is_sdpa_and_equals_the_explicit_formula(heads, monkeypatch):
    mha = MultiHeadAttention(dim=8, heads=heads).double().eval()
    x, mask = _padded_inputs()
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda *a, **kw: calls.append(kw) or sdpa(*a, **kw),
    )
    with torch.no_grad():
        out = mha(x, mask)
        want, _ = _reference_attention(mha, x, mask)
    assert len(calls) == 1 and calls[0]["dropout_p"] == 0.0
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("hook", ["map", "block", "query_key"])
def test_capture_paths_keep_exact_maps_and_agree_with_sdpa(hook):
    mha = MultiHeadAttention(dim=8, heads=2).double().eval()
    x, mask = _padded_inputs()
    maps: list[torch.Tensor] = []
    if hook == "map":
        handle = mha.register_attention_hook(lambda m, a: maps.append(a))
    elif hook == "block":
        handle = mha.register_attention_block_hook(lambda m, rows, a: maps.append(a))
    else:
        handle = mha.register_query_key_hook(
            lambda m, q, k, mk: maps.append(m.attention_weights(q, k, mk))
        )
    with torch.no_grad():
        captured = mha(x, mask)
    handle.remove()
    with torch.no_grad():
        fast = mha(x, mask)
        want, weights = _reference_attention(mha, x, mask)
    torch.testing.assert_close(torch.cat(maps, dim=2), weights, rtol=0, atol=1e-14)
    torch.testing.assert_close(captured, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast, captured, rtol=0, atol=1e-12)
    assert torch.all(maps[0][3] == 0)  # no real key: all-zero rows, the output is 0


def test_sdpa_and_explicit_paths_have_the_same_gradients():
    mha = MultiHeadAttention(dim=8, heads=2).double().train()  # dropout 0: deterministic
    x, mask = _padded_inputs()
    grads = []
    for capture in (False, True):
        handle = mha.register_attention_hook(lambda m, a: None) if capture else None
        xx = x.clone().requires_grad_(True)
        mha.zero_grad()
        (mha(xx, mask) * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        grads.append([xx.grad.clone()] + [p.grad.clone() for p in mha.parameters()])
        if handle is not None:
            handle.remove()
    for fast, explicit in zip(*grads, strict=True):
        torch.testing.assert_close(fast, explicit, rtol=0, atol=1e-12)


def test_training_dropout_in_sdpa_is_unbiased_dropout_on_the_weights():
    torch.manual_seed(5)
    mha = MultiHeadAttention(dim=8, heads=2, dropout=0.5).double()
    x, mask = _padded_inputs(batch=3)
    repeats = 4000
    xs, masks = x.repeat(repeats, 1, 1), mask.repeat(repeats, 1)
    with torch.no_grad():
        mha.train()
        dropped = mha(xs, masks).view(repeats, 3, 7, 8)
        mha.eval()
        want = mha(x, mask)
    assert not torch.allclose(dropped[0], want, atol=1e-3)  # dropout acted
    assert not torch.allclose(dropped[0], dropped[1], atol=1e-3)  # a fresh mask each time
    # E[dropout(A)] = A, so the mean over 4000 draws is the eval output (|x| ~ 1, the
    # standard error of the mean is about 0.01).
    torch.testing.assert_close(dropped.mean(dim=0), want, rtol=0, atol=0.06)


def test_empty_sequence_gives_an_empty_output():
    mha = MultiHeadAttention(dim=8, heads=2).eval()
    out = mha(torch.randn(2, 0, 8), torch.zeros(2, 0, dtype=torch.bool))
    assert out.shape == (2, 0, 8)


@pytest.mark.parametrize("name", ["Transformer", "StageAttentionNet"])
def test_models_give_the_same_logits_with_and_without_capture(make_tiny_model, name):
    samples = [
        {"patient_id": "a", "codes": ["A", "B", "C"], "y": 1},
        {"patient_id": "b", "codes": ["B"], "y": 0},
    ]
    ds = create_sample_dataset(samples, {"codes": "sequence"}, {"y": "binary"})
    model = make_tiny_model(name, ds).double().eval()
    batch = ds.collate(ds.items)
    with torch.no_grad():
        fast = model(**batch)["logit"]
        model.set_attention_hooks(True, capture_gradients=False)
        captured = model(**batch)["logit"]
        model.set_attention_hooks(False)
    torch.testing.assert_close(fast, captured, rtol=0, atol=1e-12)


def test_gradient_hook_blocks_equal_the_map_and_its_autograd_gradient():
    mha = MultiHeadAttention(dim=8, heads=2).double().eval()
    x, mask = _padded_inputs()
    direction = torch.linspace(-1, 1, 8, dtype=torch.float64)
    # Reference: the explicit map kept in the graph, its gradient by autograd.
    maps = []
    handle = mha.register_attention_hook(lambda m, a: maps.append(a))
    reference_out = mha(x, mask)
    handle.remove()
    (reference_grad,) = torch.autograd.grad((reference_out * direction).sum(), maps)
    blocks, outputs = [], []
    handle = mha.register_attention_gradient_hook(
        lambda m, rows, a, g: blocks.append((rows, a, g)), lambda m, out: outputs.append(out)
    )
    xx = x.clone().requires_grad_(True)
    out = mha(xx, mask)
    assert blocks == [] and len(outputs) == 1  # nothing formed in the forward
    (out * direction).sum().backward()
    handle.remove()
    assert [rows.start for rows, _, _ in blocks] == sorted({r.start for r, _, _ in blocks})
    weights = torch.cat([a for _, a, _ in blocks], dim=2)
    gradient = torch.cat([g for _, _, g in blocks], dim=2)
    torch.testing.assert_close(weights, maps[0].detach(), rtol=0, atol=1e-14)
    torch.testing.assert_close(gradient, reference_grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, reference_out, rtol=0, atol=1e-12)


def test_gradient_hooks_refuse_dropout_in_training():
    mha = MultiHeadAttention(dim=8, heads=2, dropout=0.1).train()
    handle = mha.register_attention_gradient_hook(lambda *_: None)
    x, mask = _inputs()
    with pytest.raises(RuntimeError, match="eval mode"):
        mha(x, mask)
    handle.remove()

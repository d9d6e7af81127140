"""The adapter captures each layer's map as its attention module returns it (forward hooks),
fused over heads at capture for forward-only methods, never through ``output_attentions``."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
import torch

from ehrlens.integrations import huggingface
from ehrlens.integrations.huggingface import (
    HuggingFaceEncoder,
    attention_modules,
    check_attention_map,
)
from ehrlens.interpret import AttentionRollout, CheferRelevance, capture_attention
from ehrlens.interpret.api import capabilities
from ehrlens.interpret.methods.chefer import gradient_weighted_attention

TOL = {"rtol": 1e-5, "atol": 1e-6}


def tiny_bert(layers: int = 3, heads: int = 4) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=2,
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval()


def token_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 64, (3, 11), generator=generator)
    mask = torch.ones(3, 11, dtype=torch.long)
    ids[1, 7:], mask[1, 7:] = 0, 0
    ids[2, 4:], mask[2, 4:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


def test_attention_modules_are_the_self_attention_layers_in_order():
    model = tiny_bert(layers=3)
    modules = attention_modules(model)
    expected = [layer.attention.self for layer in model.bert.encoder.layer]
    assert list(modules) == expected
    assert set(modules.values()) == {1}


def test_capture_never_asks_for_output_attentions(refs):
    model = tiny_bert()
    encoder = HuggingFaceEncoder(copy.deepcopy(model))
    batch = token_batch()
    with torch.inference_mode():
        with capture_attention(encoder, batch, head_fusion="mean") as run:
            layers = encoder.get_attention_layers()["input_ids"]
    assert run.outputs["model_output"].attentions is None
    _, maps = refs.attentions(refs.eager_copy(model), batch)
    assert len(layers) == len(maps) == 3
    for (fused, gradient), full in zip(layers, maps, strict=True):
        assert gradient is None and fused.shape == (3, 1, 11, 11)
        torch.testing.assert_close(fused[:, 0], full.detach().mean(dim=1), rtol=0, atol=1e-7)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_with_fusion_at_capture_equals_reference(refs, fusion):
    model = tiny_bert()
    encoder = HuggingFaceEncoder(copy.deepcopy(model))
    batch = token_batch()
    assert capabilities(encoder).fusion_at_capture
    with torch.inference_mode():
        scores = AttentionRollout(encoder, head_fusion=fusion).attribute(**batch)["input_ids"]
        _, maps = refs.attentions(refs.eager_copy(model), batch)
    expected = refs.rollout(maps, batch["attention_mask"], fuse=fusion, normalise_rows=False)
    assert bool(expected.abs().sum() > 0)
    torch.testing.assert_close(scores, expected, **TOL)


def test_chefer_fuses_gradients_in_the_backward(refs):
    model = tiny_bert()
    encoder = HuggingFaceEncoder(copy.deepcopy(model))
    batch = token_batch()
    assert capabilities(encoder).gradient_fusion
    outputs, maps = refs.attentions(refs.eager_copy(model), batch)
    target = outputs.logits.argmax(dim=1)
    selected = outputs.logits.gather(1, target[:, None]).sum()
    grads = torch.autograd.grad(selected, maps, retain_graph=True)
    scores = CheferRelevance(encoder).attribute(**batch)["input_ids"]
    torch.testing.assert_close(scores, refs.chefer(maps, grads, batch["attention_mask"]), **TOL)

    with capture_attention(
        encoder, batch, gradients=True, gradient_fusion=gradient_weighted_attention
    ) as run:
        anchors = encoder.get_gradient_anchors()
        # Each attention module's input [batch, tokens, hidden] anchors its layer's backward.
        assert [tuple(a.shape) for a in anchors] == [(3, 11, 16)] * 3
        torch.autograd.grad(run.outputs["logit"][:, 1].sum(), anchors)
        fused = encoder.get_fused_gradients()["input_ids"]
        with pytest.raises(RuntimeError, match="get_fused_gradients"):
            encoder.get_attention_layers()
    grads = torch.autograd.grad(outputs.logits[:, 1].sum(), maps)
    for got, a, g in zip(fused, maps, grads, strict=True):
        assert got.shape == (3, 11, 11)
        expected = (g * a.detach()).clamp(min=0).mean(dim=1)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_head_fusion_with_gradients_is_refused():
    encoder = HuggingFaceEncoder(tiny_bert())
    with pytest.raises(ValueError, match="forward-only"):
        encoder.set_attention_hooks(True, capture_gradients=True, head_fusion="mean")


def test_map_checks_do_not_copy_and_still_refuse_bad_maps():
    real = torch.ones(2, 5, dtype=torch.bool)
    good = torch.full((2, 3, 5, 5), 0.2)
    check_attention_map("Model", 0, good, real)  # accepted
    scores = good * 3.0  # rows sum to 3: raw scores, not probabilities
    with pytest.raises(ValueError, match=r"Model: attention of layer 2 is not post-softmax"):
        check_attention_map("Model", 2, scores, real)
    causal = torch.tril(torch.ones(5, 5))
    causal = (causal / causal.sum(dim=-1, keepdim=True)).expand(2, 3, 5, 5)
    with pytest.raises(ValueError, match="Model: no token attends to a later token"):
        check_attention_map("Model", 0, causal, real)
    # Padding: only real queries count; a padded row that sums to 0 is fine.
    padded = good.clone()
    padded[1, :, 3:] = 0.0
    mask = real.clone()
    mask[1, 3:] = False
    check_attention_map("Model", 1, padded, mask)


def test_a_forward_in_another_thread_during_capture_is_not_recorded(refs):
    model = tiny_bert()
    encoder = HuggingFaceEncoder(copy.deepcopy(model))
    batch = token_batch()
    first = next(iter(attention_modules(encoder.model)))

    def run_elsewhere(module, args, output):  # inside the captured forward, at layer 0
        if threading.current_thread() is threading.main_thread():
            other = threading.Thread(target=lambda: encoder.model(**batch))
            other.start()
            other.join()

    handle = first.register_forward_hook(run_elsewhere)
    try:
        with torch.inference_mode(), capture_attention(encoder, batch, head_fusion="mean"):
            layers = encoder.get_attention_layers()["input_ids"]
    finally:
        handle.remove()
    _, maps = refs.attentions(refs.eager_copy(model), batch)
    assert len(layers) == len(maps) == 3
    for (fused, _), full in zip(layers, maps, strict=True):
        torch.testing.assert_close(fused[:, 0], full.detach().mean(dim=1), rtol=0, atol=1e-7)


def eager_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrapping keeps models on eager attention (as those :func:`supports_fused_attention`
    refuses), for the paths such models take."""
    monkeypatch.setattr(huggingface, "supports_fused_attention", lambda model, modules: False)


def test_key_capture_keeps_each_layers_call_not_its_map(monkeypatch):
    from ehrlens.integrations.huggingface import CapturedLayerCall

    eager_only(monkeypatch)
    encoder = HuggingFaceEncoder(tiny_bert())
    assert encoder.model.config._attn_implementation == "eager"
    assert capabilities(encoder).key_capture
    batch = token_batch()
    with torch.inference_mode():
        with capture_attention(encoder, batch):
            maps = [a for a, _ in encoder.get_attention_layers()["input_ids"]]
        with capture_attention(encoder, batch, keys_only=True):
            with pytest.raises(RuntimeError, match="no attention captured"):
                encoder.get_attention_layers()
            calls = encoder.get_attention_keys()["input_ids"]
            assert (
                [type(c) for c in calls]
                == [CapturedLayerCall] * len(maps)
                == [CapturedLayerCall] * 3
            )
            for call, attention in zip(calls, maps, strict=True):
                assert call.seq_len == attention.shape[-1] == call.block_rows() == 11
                assert call.block_rows(2) == 11  # recomputed whole, once, whatever is asked
                # the layer's own computation on the same inputs and shapes: exact
                torch.testing.assert_close(call.weights(), attention, rtol=0, atol=0)
                torch.testing.assert_close(call.weights(slice(0, 1)), attention[:, :, :1])
    with pytest.raises(RuntimeError, match="no attention module calls captured"):
        encoder.get_attention_keys()  # cleared when the capture block ended
    with pytest.raises(ValueError, match="forward-only"):
        encoder.set_attention_hooks(True, capture_gradients=True, keys_only=True)


def test_low_memory_rollout_recomputes_layers_in_eval_mode(refs):
    # Dropout on: recomputing outside eval mode would change the maps.
    model = tiny_bert()
    model.config.attention_probs_dropout_prob = 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    encoder = HuggingFaceEncoder(model).train()
    batch = token_batch()
    with torch.inference_mode():
        kept = AttentionRollout(encoder, low_memory=False).attribute(**batch)["input_ids"]
        recomputed = AttentionRollout(encoder, low_memory=True).attribute(**batch)["input_ids"]
    torch.testing.assert_close(recomputed, kept, **TOL)
    assert encoder.training  # the caller's mode is back


def test_auto_keeps_maps_on_hugging_face_models_on_eager_attention(monkeypatch):
    eager_only(monkeypatch)
    encoder = HuggingFaceEncoder(tiny_bert())
    assert not encoder.fused_weighted_rows
    assert AttentionRollout(encoder).recomputes_maps(token_batch()) is False


def test_auto_takes_the_fused_kernel_on_encoders_under_the_ehrlens_attention():
    encoder = HuggingFaceEncoder(tiny_bert())
    assert encoder.fused_weighted_rows
    assert AttentionRollout(encoder).recomputes_maps(token_batch()) is True
    # max fusion and discards need the maps: kept, as before
    assert AttentionRollout(encoder, head_fusion="max").recomputes_maps(token_batch()) is False
    assert AttentionRollout(encoder, discard_ratio=0.1).recomputes_maps(token_batch()) is False

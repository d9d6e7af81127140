"""AttnLRP on decoders (GPT-2, Llama, Qwen2, Mistral) and a CEHR-BERT-shaped custom model:
conservation share by share.

The explained logit equals the relevance of the token embeddings (what AttnLRP returns)
plus the shares of every additive parameter (biases, GPT-2's position embeddings; ``p *
grad``) plus the softmax bias terms, computed here from the model's own maps and their
gradients (Proposition 3.1 of the paper). RMSNorm, the gated MLP, rotary embeddings,
grouped-query attention and sliding windows add no share: the rules conserve through them
(see ``ehrlens.integrations.hf_lrp``). Float64 models, right padding of at most two
tokens (in float64, ``transformers`` turns a padded query row whose whole window is padding
into NaN); tolerance 1e-6 relative (the eager softmax and RMSNorm compute in float32 inside
float64 models).
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

import _decoders as dec

from ehrlens.integrations.huggingface import HuggingFaceModel
from ehrlens.interpret import AttnLRP
from ehrlens.interpret.api import lrp_rules

ADDITIVE = ("bias", "wpe.weight", "position_embeddings.weight", "token_type_embeddings.weight")


def softmax_share(attention, gradient):
    h = gradient / 2  # the uniform rule on A V: A gets half
    r_a = (attention * h).sum()
    centred = h - (attention * h).sum(dim=-1, keepdim=True)
    return r_a - (torch.xlogy(attention, attention) * centred).sum()


def shares(wrapped, batch, target: int, additive=ADDITIVE) -> tuple[float, float]:
    """(explained logit summed over the batch, every share but the token embeddings')."""
    params = {n: p for n, p in wrapped.model.named_parameters() if n.endswith(additive)}
    with torch.enable_grad(), lrp_rules(wrapped):
        wrapped.set_attention_hooks(True, capture_gradients=True)
        try:
            logit = wrapped(**batch)["logit"][:, target]
            maps = [a for a, _ in wrapped.get_attention_layers()["input_ids"]]
            wrt = maps + list(params.values())
            grads = torch.autograd.grad(logit.sum(), wrt, allow_unused=True)
            grads = tuple(
                torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads, strict=True)
            )
        finally:
            wrapped.set_attention_hooks(False)
            wrapped.clear_attention_capture()
    map_grads, param_grads = grads[: len(maps)], grads[len(maps) :]
    total = sum(softmax_share(a.detach(), g) for a, g in zip(maps, map_grads, strict=True))
    total = total + sum(
        (p.detach() * g).sum() for p, g in zip(params.values(), param_grads, strict=True)
    )
    return float(logit.detach().sum()), float(total)


@pytest.mark.parametrize("family", list(dec.FAMILIES))
@pytest.mark.parametrize("head", dec.HEADS)
def test_attnlrp_conserves_the_logit_share_by_share(family, head):
    wrapped = HuggingFaceModel(dec.build(family, head, dtype=torch.float64))
    batch = dec.token_batch("right", lengths=(7, 6, 5))
    target = 7 if head == "lm" else 1
    scores = AttnLRP(wrapped).attribute(target_class_idx=target, **batch)["input_ids"]
    logit, rest = shares(wrapped, batch, target)
    assert float(scores.double().sum()) + rest == pytest.approx(logit, rel=1e-6, abs=1e-9)
    assert abs(float(scores.sum())) > 1e-3  # the tokens carry relevance
    assert bool((scores[batch["attention_mask"] == 0] == 0).all())
    assert all(not m._forward_hooks for m in wrapped.model.modules())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_without_the_rules_the_sum_is_not_the_logit(family):
    """The check can fail: plain gradient x input breaks conservation on the same models."""
    wrapped = HuggingFaceModel(dec.build(family, "classifier", dtype=torch.float64))
    batch = dec.token_batch("right", lengths=(7, 6, 5))
    logit, rest = shares(wrapped, batch, 1)
    embeddings = wrapped.model.get_input_embeddings()
    captured = {}

    def keep(module, inputs, output):
        leaf = output.detach().requires_grad_(True)
        captured["e"] = leaf
        return leaf

    handle = embeddings.register_forward_hook(keep)
    try:
        plain = wrapped(**batch)["logit"][:, 1].sum()
        (grad,) = torch.autograd.grad(plain, captured["e"])
    finally:
        handle.remove()
    mask = batch["attention_mask"][..., None]
    plain_sum = float((captured["e"].detach() * grad * mask).sum())
    assert plain_sum + rest != pytest.approx(logit, rel=1e-3)


def test_forward_values_are_unchanged_by_the_rules():
    model = dec.build("qwen2", "lm", dtype=torch.float64)
    wrapped = HuggingFaceModel(copy.deepcopy(model))
    batch = dec.token_batch("right", lengths=(7, 6, 5))
    with torch.no_grad():
        before = wrapped(**batch)["logit"]
    with lrp_rules(wrapped), torch.enable_grad():
        during = wrapped(**batch)["logit"]
    assert torch.equal(before, during.detach())


def test_an_architecture_without_rules_is_refused_by_name():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    wrapped = HuggingFaceModel(GPTNeoXForCausalLM(config).eval())
    with pytest.raises(TypeError, match=r"GPTNeoXForCausalLM \(model_type 'gpt_neox'\)"):
        AttnLRP(wrapped).attribute(**dec.token_batch("right", lengths=(7, 6, 5)))


def test_attnlrp_conserves_on_a_cehr_bert_shaped_custom_model():
    """BERT's rules inside a custom model: its own embeddings' other terms (age, visit
    segment; ``p * grad``) are shares, as biases are."""
    from test_hf_custom_models import build, patients

    wrapped = HuggingFaceModel(build().double())
    batch = patients()
    scores = AttnLRP(wrapped).attribute(target_class_idx=1, **batch)["input_ids"]
    logit, rest = shares(wrapped, batch, 1, (*ADDITIVE, "age.weight", "segments.weight"))
    assert float(scores.double().sum()) + rest == pytest.approx(logit, rel=1e-6, abs=1e-9)
    assert bool((scores[batch["attention_mask"] == 0] == 0).all())

"""AttnLRP through the Hugging Face adapter (BERT family): conservation share by share.

The explained logit equals the relevance of the word embeddings (what AttnLRP returns) plus
the shares of every additive parameter (biases, layer-norm offsets, position and token-type
embeddings: ``p * grad``) plus the softmax bias terms, computed here from the model's own
``output_attentions`` maps and their gradients (Proposition 3.1 of the paper). Float64;
tolerance 1e-6 relative (the float32 rounding of the returned scores).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from transformers import BertConfig, BertForSequenceClassification

from ehrlens.integrations.huggingface import HuggingFaceEncoder, cls_projection
from ehrlens.interpret import AttnLRP
from ehrlens.interpret.api import lrp_rules

ADDITIVE = ("bias", "position_embeddings.weight", "token_type_embeddings.weight")


def tiny_bert() -> Any:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # nonzero biases and offsets, so their shares count
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.2)
    return model.double()


def softmax_share(attention, gradient):
    h = gradient / 2  # the uniform rule on A V: A gets half
    r_a = (attention * h).sum()
    centred = h - (attention * h).sum(dim=-1, keepdim=True)
    return r_a - (torch.xlogy(attention, attention) * centred).sum()


def shares(encoder: HuggingFaceEncoder, batch: dict[str, Any], target) -> tuple[float, float]:
    """(explained logit summed over the batch, every share but the word embeddings')."""
    params = {n: p for n, p in encoder.model.named_parameters() if n.endswith(ADDITIVE)}
    with torch.enable_grad(), lrp_rules(encoder):
        encoder.set_attention_hooks(True, capture_gradients=True)
        try:
            logit = target(encoder(**batch)["logit"])
            maps = [a for a, _ in encoder.get_attention_layers()["input_ids"]]
            wrt = maps + list(params.values())
            grads = torch.autograd.grad(logit.sum(), wrt, allow_unused=True)
            grads = tuple(
                torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads, strict=True)
            )
        finally:
            encoder.set_attention_hooks(False)
            encoder.clear_attention_capture()
    map_grads, param_grads = grads[: len(maps)], grads[len(maps) :]
    total = sum(softmax_share(a.detach(), g) for a, g in zip(maps, map_grads, strict=True))
    total = total + sum(
        (p.detach() * g).sum() for p, g in zip(params.values(), param_grads, strict=True)
    )
    return float(logit.detach().sum()), float(total)


def batch_of(ids: list[list[int]]) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in ids)
    input_ids = torch.tensor([r + [0] * (width - len(r)) for r in ids])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
    return {"input_ids": input_ids, "attention_mask": mask}


@pytest.mark.parametrize("target_class", [0, 1])
def test_conservation_on_a_tiny_bert_classifier(target_class):
    encoder = HuggingFaceEncoder(tiny_bert())
    batch = batch_of([[2, 7, 9, 11, 3], [2, 5, 3]])
    scores = AttnLRP(encoder).attribute(target_class_idx=target_class, **batch)["input_ids"]
    logit, rest = shares(encoder, batch, lambda logit: logit[:, target_class])
    assert float(scores.double().sum()) + rest == pytest.approx(logit, rel=1e-6)
    assert abs(rest) > 1e-4 and abs(float(scores.sum())) > 1e-4
    assert torch.all(scores[1, 3:] == 0)  # padding


def test_conservation_on_minilm_with_a_linear_output(base_model, tokenizer):
    model = copy.deepcopy(base_model).double()
    torch.manual_seed(0)
    weight = torch.randn(model.config.hidden_size, dtype=torch.float64)
    encoder = HuggingFaceEncoder(model, output_fn=cls_projection(weight))
    batch = dict(
        tokenizer(
            ["Chest pain radiating to the left arm.", "Fever."], padding=True, return_tensors="pt"
        )
    )
    scores = AttnLRP(encoder).attribute(**batch)["input_ids"]
    logit, rest = shares(encoder, batch, lambda logit: logit[:, 0])
    assert float(scores.double().sum()) + rest == pytest.approx(logit, rel=1e-6)
    assert torch.all(scores[batch["attention_mask"] == 0] == 0)


def test_forward_unchanged_and_rules_removed(classifier, padded_batch):
    encoder = HuggingFaceEncoder(copy.deepcopy(classifier))
    with torch.no_grad():
        before = encoder(**padded_batch)["logit"]
    with lrp_rules(encoder), torch.no_grad():
        during = encoder(**padded_batch)["logit"]
    assert torch.equal(before, during)  # the rules change only the backward: exact
    scores = AttnLRP(encoder).attribute(**padded_batch)["input_ids"]
    assert scores.shape == padded_batch["input_ids"].shape
    assert all(not m._forward_hooks for m in encoder.modules())
    assert all(p.grad is None for p in encoder.parameters())


def test_other_architectures_are_refused_naming_them():
    from transformers import DistilBertConfig, DistilBertModel

    model = DistilBertModel(
        DistilBertConfig(vocab_size=30, dim=8, n_layers=1, n_heads=2, hidden_dim=16)
    ).eval()
    encoder = HuggingFaceEncoder(model, output_fn=cls_projection(torch.ones(8)))
    with pytest.raises(TypeError, match="distilbert"):
        AttnLRP(encoder).attribute(**batch_of([[2, 5, 3]]))


def test_a_function_activation_is_refused():
    model = tiny_bert()
    for layer in model.bert.encoder.layer:
        # as a config with a callable hidden_act builds it: a function, not a module
        del layer.intermediate._modules["intermediate_act_fn"]
        layer.intermediate.__dict__["intermediate_act_fn"] = torch.nn.functional.gelu
    encoder = HuggingFaceEncoder(model)
    with pytest.raises(TypeError, match="plain function"):
        AttnLRP(encoder).attribute(**batch_of([[2, 5, 3]]))
    assert all(not m._forward_hooks for m in model.modules() if isinstance(m, nn.Module))

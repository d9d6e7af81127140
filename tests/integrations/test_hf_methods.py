"""Rollout, Chefer and flow on the wrapped MiniLM against references from ``output_attentions``.

The references (conftest) follow the papers: rollout multiplies ``(A + I)`` row-normalised
over layers and reads the [CLS] row (or the mean of real rows); Chefer accumulates
``R += mean_h(clamp(grad * A, min=0)) @ R`` from ``R = I`` with gradients from
``torch.autograd.grad``; flow is networkx max-flow on the layered graph. Every token column is
kept ([CLS] included), padding gets exactly 0.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ehrlens.integrations.huggingface import HuggingFaceEncoder
from ehrlens.interpret import (
    AttentionFlow,
    AttentionRollout,
    CheferRelevance,
    InputXGradient,
    RawAttention,
)

TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def wrapped(classifier):
    return HuggingFaceEncoder(copy.deepcopy(classifier))


@pytest.fixture(scope="module")
def reference_model(classifier, refs):
    return refs.eager_copy(classifier)


@pytest.mark.parametrize("head_fusion", ["mean", "max"])
def test_rollout_equals_reference(wrapped, reference_model, padded_batch, refs, head_fusion):
    with torch.no_grad():
        _, maps = refs.attentions(reference_model, padded_batch)
    # mean: the paper's row-normalised (A + I); max: ehrlens' documented 0.5 * (A + I)
    expected = refs.rollout(
        maps, padded_batch["attention_mask"], fuse=head_fusion, normalise_rows=head_fusion == "mean"
    )
    with torch.inference_mode():
        got = AttentionRollout(wrapped, head_fusion=head_fusion).attribute(**padded_batch)
    assert list(got) == ["input_ids"]
    assert got["input_ids"].shape == padded_batch["input_ids"].shape
    torch.testing.assert_close(got["input_ids"], expected, **TOL)


def test_rollout_with_mean_readout_equals_reference(classifier, padded_batch, refs):
    wrapped = HuggingFaceEncoder(copy.deepcopy(classifier), readout="mean")
    with torch.no_grad():
        _, maps = refs.attentions(refs.eager_copy(classifier), padded_batch)
    expected = refs.rollout(maps, padded_batch["attention_mask"], readout="mean")
    with torch.inference_mode():
        got = AttentionRollout(wrapped).attribute(**padded_batch)["input_ids"]
    torch.testing.assert_close(got, expected, **TOL)
    # a row of a row-stochastic product read out by weights summing to 1 sums to 1
    torch.testing.assert_close(got.sum(dim=1), torch.ones(2), **TOL)


@pytest.mark.parametrize("target", [None, 2])
def test_chefer_equals_reference(wrapped, reference_model, padded_batch, refs, target):
    outputs, maps = refs.attentions(reference_model, padded_batch)
    index = outputs.logits.argmax(dim=1) if target is None else torch.tensor([target] * 2)
    explained = outputs.logits.gather(1, index[:, None]).sum()
    grads = torch.autograd.grad(explained, maps)
    expected = refs.chefer(maps, grads, padded_batch["attention_mask"])
    got = CheferRelevance(wrapped).attribute(target_class_idx=target, **padded_batch)
    torch.testing.assert_close(got["input_ids"], expected, **TOL)
    assert all(p.grad is None for p in wrapped.parameters())


def test_flow_equals_networkx_reference(wrapped, reference_model, tokenizer, refs):
    batch = dict(tokenizer(["Mild fever today."], return_tensors="pt"))
    with torch.no_grad():
        _, maps = refs.attentions(reference_model, batch)
    expected = refs.flow(maps, batch["attention_mask"])
    with torch.inference_mode():
        got = AttentionFlow(wrapped).attribute(**batch)["input_ids"]
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("method", ["rollout", "flow", "chefer"])
def test_padded_batch_equals_each_sentence_alone(wrapped, padded_batch, refs, method):
    def explain(batch):
        if method == "chefer":
            return CheferRelevance(wrapped).attribute(**batch)["input_ids"]
        interpreter = AttentionRollout(wrapped) if method == "rollout" else AttentionFlow(wrapped)
        with torch.inference_mode():
            return interpreter.attribute(**batch)["input_ids"]

    together = explain(padded_batch)
    mask = padded_batch["attention_mask"].bool()
    assert bool((~mask).any()), "the batch must have padding"
    assert bool((together[~mask] == 0).all())  # exactly 0, not merely small
    for index in range(2):
        alone = explain(refs.one_sentence(padded_batch, index))[0]
        length = alone.shape[0]
        torch.testing.assert_close(together[index, :length], alone, **TOL)
        assert bool((together[index, :length] > 0).all())


def test_input_x_gradient_equals_reference(wrapped, reference_model, padded_batch):
    # the word embeddings' output is the layer attributed: (d logit / d emb) * emb, summed
    embeddings = reference_model.get_input_embeddings()(padded_batch["input_ids"]).detach()
    embeddings.requires_grad_(True)
    inputs = {k: v for k, v in padded_batch.items() if k != "input_ids"}
    logits = reference_model(inputs_embeds=embeddings, **inputs).logits
    target = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), embeddings)
    expected = (grad * embeddings).sum(dim=-1) * padded_batch["attention_mask"]
    got = InputXGradient(wrapped).attribute(**padded_batch)["input_ids"]
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-7)


def test_raw_attention_is_the_last_layers_cls_row(wrapped, reference_model, padded_batch, refs):
    with torch.no_grad():
        _, maps = refs.attentions(reference_model, padded_batch)
    expected = maps[-1].mean(dim=1)[:, 0, :] * padded_batch["attention_mask"]
    with torch.inference_mode():
        got = RawAttention(wrapped).attribute(**padded_batch)["input_ids"]
    torch.testing.assert_close(got, expected, **TOL)


def test_removal_metrics_use_the_vocabularys_pad_id():
    # RoBERTa: <s> is id 0 and <pad> id 1. Units are the real tokens (<s> included), and a
    # removed token becomes <pad>, not id 0.
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from ehrlens.metrics import RemovalFaithfulness, rank_units, remove_units
    from ehrlens.metrics.removal import model_processors

    config = RobertaConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40, num_labels=2, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    encoder = HuggingFaceEncoder(RobertaForSequenceClassification(config).eval())
    ids = torch.tensor([[0, 9, 10, 11, 2], [0, 12, 2, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": (ids != 1).long()}
    scores = {"input_ids": torch.tensor([[5.0, 4, 3, 2, 1], [5.0, 4, 3, 0, 0]])}
    processors = model_processors(encoder, batch, scores)
    keys, rank, real = rank_units(scores, batch, processors)
    assert real.tolist() == [[True] * 5, [True, True, True, False, False]]
    removed = remove_units(batch, keys, rank == 0, "zero", processors)["input_ids"]
    assert removed.tolist() == [[1, 9, 10, 11, 2], [1, 12, 2, 1, 1]]
    result = RemovalFaithfulness(encoder, percentages=(20,))(scores, batch)
    assert result.n_scored == 2

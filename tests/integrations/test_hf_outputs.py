"""Explaining a scalar of a bare encoder (no head): similarity_to, cls_projection, pooling."""

from __future__ import annotations

import copy

import pytest
import torch

from ehrlens.integrations.huggingface import (
    HuggingFaceEncoder,
    cls_projection,
    pool,
    sentence_embedding,
    similarity_to,
)
from ehrlens.interpret import AttentionRollout, CheferRelevance

TOL = {"rtol": 1e-5, "atol": 1e-6}


def hand_mean_pool(hidden, mask):
    mask = mask.to(hidden.dtype)
    return torch.einsum("bth,bt->bh", hidden, mask) / mask.sum(dim=1, keepdim=True)


def hand_cosine(a, b):
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1))


@pytest.fixture(scope="module")
def reference_embedding(base_model, tokenizer):
    query = tokenizer(["heart attack"], return_tensors="pt")
    with torch.no_grad():
        return sentence_embedding(base_model, **query)[0]


def test_sentence_embedding_is_the_masked_mean(base_model, padded_batch):
    with torch.no_grad():
        got = sentence_embedding(base_model, **padded_batch)
        hidden = base_model(**padded_batch).last_hidden_state
        cls = sentence_embedding(base_model, **padded_batch, pooling="cls")
    torch.testing.assert_close(got, hand_mean_pool(hidden, padded_batch["attention_mask"]), **TOL)
    assert torch.equal(cls, hidden[:, 0])
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(hidden, padded_batch["attention_mask"], "max")


@pytest.mark.parametrize("readout", ["cls", "mean"])
def test_similarity_is_explained_like_the_hand_reference(
    base_model, padded_batch, reference_embedding, refs, readout
):
    encoder = HuggingFaceEncoder(
        copy.deepcopy(base_model), output_fn=similarity_to(reference_embedding), readout=readout
    )
    assert encoder.mode == "regression"
    mask = padded_batch["attention_mask"]

    # the explained value: cosine of the masked-mean embedding to the reference, by hand
    reference_model = refs.eager_copy(base_model)
    outputs, maps = refs.attentions(reference_model, padded_batch)
    similarity = hand_cosine(hand_mean_pool(outputs.last_hidden_state, mask), reference_embedding)
    with torch.no_grad():
        logit = encoder(**padded_batch)["logit"]
    assert logit.shape == (2, 1)
    torch.testing.assert_close(logit[:, 0], similarity.detach(), **TOL)

    grads = torch.autograd.grad(similarity.sum(), maps)
    expected = refs.chefer(maps, grads, mask)
    if readout == "mean":  # Chefer's matrix read out by the mean of the real rows
        expected = refs_chefer_mean(maps, grads, mask)
    got = CheferRelevance(encoder).attribute(**padded_batch)["input_ids"]
    torch.testing.assert_close(got, expected, **TOL)

    with torch.inference_mode():
        rollout = AttentionRollout(encoder).attribute(**padded_batch)["input_ids"]
    torch.testing.assert_close(rollout, refs.rollout(maps, mask, readout=readout), **TOL)


def refs_chefer_mean(maps, grads, mask):
    batch, tokens = mask.shape
    relevance = torch.eye(tokens, dtype=torch.float64).expand(batch, tokens, tokens)
    for a, g in zip(maps, grads, strict=True):
        relevance = relevance + (g.double() * a.detach().double()).clamp(min=0).mean(1) @ relevance
    real = mask.double()
    row = (real[:, :, None] * relevance).sum(dim=1) / real.sum(dim=1, keepdim=True)
    return (row * real).float()


def test_cls_projection_outputs(base_model, padded_batch):
    torch.manual_seed(0)
    hidden_size = base_model.config.hidden_size
    direction, matrix = torch.randn(hidden_size), torch.randn(3, hidden_size)
    scalar = HuggingFaceEncoder(copy.deepcopy(base_model), output_fn=cls_projection(direction))
    several = HuggingFaceEncoder(
        copy.deepcopy(base_model),
        output_fn=cls_projection(matrix, bias=torch.tensor([1.0, 2.0, 3.0])),
        mode="multiclass",
    )
    with torch.no_grad():
        cls = scalar(**padded_batch)["model_output"].last_hidden_state[:, 0]
        one = scalar(**padded_batch)["logit"]
        three = several(**padded_batch)["logit"]
    torch.testing.assert_close(one, (cls @ direction)[:, None], **TOL)
    torch.testing.assert_close(three, cls @ matrix.T + torch.tensor([1.0, 2.0, 3.0]), **TOL)
    chefer = CheferRelevance(several).attribute(target_class_idx=2, **padded_batch)
    assert chefer["input_ids"].shape == padded_batch["input_ids"].shape
    with pytest.raises(ValueError, match="weight must be a tensor"):
        cls_projection(torch.zeros(2, 2, 2))
    wrong = HuggingFaceEncoder(copy.deepcopy(base_model), output_fn=cls_projection(torch.ones(5)))
    with pytest.raises(ValueError, match="5 input features, the encoder's hidden size is 384"):
        wrong(**padded_batch)


def test_similarity_to_checks_the_reference(base_model, padded_batch):
    with pytest.raises(ValueError, match=r"reference must be one embedding \[hidden\]"):
        similarity_to(torch.zeros(2, 384))
    encoder = HuggingFaceEncoder(copy.deepcopy(base_model), output_fn=similarity_to(torch.ones(7)))
    with pytest.raises(ValueError, match="7 dimensions, the encoder's hidden size is 384"):
        encoder(**padded_batch)

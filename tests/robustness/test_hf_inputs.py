"""Hugging Face inputs the model cannot read are refused naming the input.

Issue "Eighteen more ways the promises break", item 15: out-of-range ids gave "index out of
range in self", a too-long input a raw RuntimeError about an expanded size, and a
``special_tokens_mask`` of the wrong shape a raw size mismatch.
"""

from __future__ import annotations

import pytest
import torch

from ehrlens.integrations.huggingface import HuggingFaceEncoder
from ehrlens.interpret import AttentionRollout, InputXGradient

VOCAB, POSITIONS = 40, 16


@pytest.fixture(scope="module")
def encoder():
    """A tiny randomly initialised BERT classifier (no download)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=POSITIONS, num_labels=2,
    )  # fmt: skip
    return HuggingFaceEncoder(BertForSequenceClassification(config).eval())


def _batch(ids):
    ids = torch.tensor(ids)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("method", [AttentionRollout, InputXGradient])
def test_item_15_an_id_outside_the_vocabulary_is_named(encoder, method):
    batch = _batch([[2, 5, 7, 3], [2, 5, VOCAB + 3, 3]])
    with pytest.raises(ValueError, match=rf"sample 1, position 2 holds token id {VOCAB + 3}"):
        method(encoder).attribute(None, **batch)
    with pytest.raises(ValueError, match=r"token id -1, outside the model's vocabulary of 40"):
        encoder(**_batch([[2, -1, 3]]))


def test_item_15_an_input_longer_than_the_positions_is_named(encoder):
    batch = _batch([[2] * (POSITIONS + 4)])
    with pytest.raises(ValueError, match=r"20 tokens, more than the model's 16 learned positions"):
        AttentionRollout(encoder).attribute(None, **batch)


@pytest.mark.parametrize("name", ["special_tokens_mask", "attention_mask", "token_type_ids"])
def test_item_15_a_mask_of_the_wrong_shape_is_named(encoder, name):
    batch = _batch([[2, 5, 7, 3], [2, 5, 6, 3]])
    batch[name] = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"input '{name}': shape \(2, 3\), expected .* \(2, 4\)"):
        AttentionRollout(encoder).attribute(None, **batch)


def test_item_15_readable_inputs_still_explain(encoder):
    batch = _batch([[2, 5, 7, 3], [2, 5, VOCAB - 1, 3]])
    batch["special_tokens_mask"] = torch.tensor([[1, 0, 0, 1], [1, 0, 0, 1]])
    scores = AttentionRollout(encoder).attribute(None, **batch)["input_ids"]
    assert scores.shape == (2, 4) and torch.isfinite(scores).all()

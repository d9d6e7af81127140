"""Which ``transformers`` encoders work through the adapter: tiny random configs, offline.

Each supported architecture is built from a tiny config (seeded), wrapped, and explained;
rollout and Chefer must equal the references computed from an unwrapped eager copy's
``output_attentions``, padding must get exactly 0, and a padded batch must give each
sentence's scores alone. Architectures whose attention maps are not per-token
post-softmax self-attention must be refused with an error naming the model class.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from ehrlens.integrations.huggingface import HuggingFaceEncoder
from ehrlens.interpret import AttentionRollout, CheferRelevance

TOL = {"rtol": 1e-5, "atol": 1e-6}
BERT_LIKE = {
    "vocab_size": 64,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 40,
    "num_labels": 2,
}
SUPPORTED: dict[str, dict[str, Any]] = {
    "bert": {},
    "roberta": {"pad_token_id": 1},
    "xlm-roberta": {"pad_token_id": 1},
    "electra": {"embedding_size": 16},
    "albert": {"embedding_size": 8},
    "deberta-v2": {},
    "mpnet": {"pad_token_id": 1},
    "roformer": {},
    "modernbert": {
        "pad_token_id": 1,
        "cls_token_id": 2,
        "sep_token_id": 3,
        "mask_token_id": 4,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "global_attn_every_n_layers": 2,  # layer 1 attends within a window of 4 tokens
        "local_attention": 4,
    },
    "big_bird": {"attention_type": "original_full"},
    "distilbert": {
        "vocab_size": 64,
        "dim": 16,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dim": 32,
        "max_position_embeddings": 40,
        "num_labels": 2,
    },
}
#: Maps come from ``output_attentions`` (no attention module listed for hooks).
LISTS_NO_ATTENTION_MODULES = ("deberta-v2", "mpnet", "roformer")
REFUSED: dict[str, tuple[dict[str, Any], type[Exception], str]] = {
    # local windows: maps are [batch, heads, tokens, window + 1]
    "longformer": ({"attention_window": [4, 4]}, ValueError, "attention of layer 0 is"),
    # sparse blocks: no maps at all
    "big_bird": ({"attention_type": "block_sparse"}, TypeError, "returned no attention maps"),
    # returns the pre-softmax scores
    "squeezebert": (
        {
            "embedding_size": 16,
            "q_groups": 1,
            "k_groups": 1,
            "v_groups": 1,
            "post_attention_groups": 1,
            "intermediate_groups": 1,
            "output_groups": 1,
        },
        ValueError,
        "is not post-softmax weights",
    ),
}


def build(model_type: str, overrides: dict[str, Any]) -> Any:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    kwargs = overrides if model_type == "distilbert" else {**BERT_LIKE, **overrides}
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config).eval()


def token_batch(model: Any) -> dict[str, torch.Tensor]:
    """Two sequences of ids >= 5 (no special meaning; not the ehrlens pad id 0), padded."""
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 64, (2, 9), generator=generator)
    mask = torch.ones(2, 9, dtype=torch.long)
    ids[1, 5:], mask[1, 5:] = pad, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("model_type", list(SUPPORTED))
def test_supported_architecture(model_type, refs):
    model = build(model_type, SUPPORTED[model_type])
    encoder = HuggingFaceEncoder(copy.deepcopy(model))
    reference = refs.eager_copy(model)
    batch = token_batch(model)
    mask = batch["attention_mask"]

    outputs, maps = refs.attentions(reference, batch)
    target = outputs.logits.argmax(dim=1)
    grads = torch.autograd.grad(outputs.logits.gather(1, target[:, None]).sum(), maps)
    with torch.inference_mode():
        rollout = AttentionRollout(encoder).attribute(**batch)["input_ids"]
    chefer = CheferRelevance(encoder).attribute(**batch)["input_ids"]
    torch.testing.assert_close(rollout, refs.rollout(maps, mask), **TOL)
    # Maps recomputed from each attention module's captured call, one layer at a time; models
    # whose attention modules are not listed (maps from output_attentions) refuse, naming it.
    low_memory = AttentionRollout(encoder, low_memory=True)
    with torch.inference_mode():
        if model_type in LISTS_NO_ATTENTION_MODULES:
            with pytest.raises(TypeError, match="lists no attention modules"):
                low_memory.attribute(**batch)
        else:
            recomputed = low_memory.attribute(**batch)["input_ids"]
            torch.testing.assert_close(recomputed, refs.rollout(maps, mask), **TOL)
    torch.testing.assert_close(chefer, refs.chefer(maps, grads, mask), **TOL)

    assert bool((rollout[1, 5:] == 0).all()) and bool((chefer[1, 5:] == 0).all())
    alone = {key: value[1:, :5] for key, value in batch.items()}
    with torch.inference_mode():
        rollout_alone = AttentionRollout(encoder).attribute(**alone)["input_ids"]
    chefer_alone = CheferRelevance(encoder).attribute(**alone)["input_ids"]
    torch.testing.assert_close(rollout[1:, :5], rollout_alone, **TOL)
    torch.testing.assert_close(chefer[1:, :5], chefer_alone, **TOL)


@pytest.mark.parametrize("model_type", list(REFUSED))
def test_refused_architecture(model_type):
    overrides, error, message = REFUSED[model_type]
    model = build(model_type, overrides)
    encoder = HuggingFaceEncoder(model)
    with pytest.raises(error, match=message) as raised, torch.inference_mode():
        AttentionRollout(encoder).attribute(**token_batch(model))
    assert type(model).__name__ in str(raised.value)


def test_roberta_cls_with_token_id_0_keeps_its_score(refs):
    """RoBERTa's <s> is token 0 and its pad token 1: the model's pad id decides padding."""
    model = build("roberta", SUPPORTED["roberta"])
    batch = token_batch(model)
    batch["input_ids"][:, 0] = 0  # RoBERTa's <s>
    with torch.inference_mode():
        rollout = AttentionRollout(HuggingFaceEncoder(model)).attribute(**batch)["input_ids"]
    _, maps = refs.attentions(refs.eager_copy(model), batch)
    torch.testing.assert_close(rollout, refs.rollout(maps, batch["attention_mask"]), **TOL)

"""Custom ``PreTrainedModel`` classes built around standard blocks, explained without an
adapter: attention modules are found by class, extra inputs pass through unchanged.

The CEHR-BERT-shaped model has its own embeddings (concept + age + visit segment) around
``transformers``' ``BertEncoder``. References: maps read by the test's own forward hooks on
the ``BertSelfAttention`` modules of an unwrapped eager copy, gradients from autograd.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("transformers")

from transformers import BertConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertEncoder, BertSelfAttention

from ehrlens.integrations.huggingface import HuggingFaceModel
from ehrlens.interpret import AttentionRollout, CheferRelevance, InputXGradient

TOL = {"rtol": 1e-5, "atol": 1e-6}


class CehrBertEmbeddings(nn.Module):
    """Concept, age and visit-segment embeddings, summed and normalised (CEHR-BERT's shape)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.concepts = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.age = nn.Linear(1, config.hidden_size)
        self.segments = nn.Embedding(3, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, input_ids: Tensor, ages: Tensor, visit_segments: Tensor) -> Tensor:
        ages = ages.to(self.age.weight.dtype)[..., None] / 100.0
        embedded = self.concepts(input_ids) + self.age(ages) + self.segments(visit_segments)
        return self.norm(embedded)


class CehrBertForSequenceClassification(PreTrainedModel):
    """Its own embeddings and extra inputs around the standard ``BertEncoder``."""

    config_class = BertConfig
    base_model_prefix = "cehrbert"

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.embeddings = CehrBertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.concepts

    def forward(
        self,
        input_ids: Tensor,
        ages: Tensor,
        visit_segments: Tensor,
        attention_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        hidden = self.embeddings(input_ids, ages, visit_segments)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * -1e9
        hidden = self.encoder(hidden, attention_mask=additive).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(hidden[:, 0]))


def build() -> CehrBertForSequenceClassification:
    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    torch.manual_seed(0)
    return CehrBertForSequenceClassification(config).eval()


def patients() -> dict[str, Tensor]:
    """Two patients: [CLS] then codes over visits, ages and visit segments; the second padded."""
    ids = torch.tensor([[1, 7, 9, 12, 15, 22, 30], [1, 8, 11, 5, 0, 0, 0]])
    mask = (ids != 0).long()
    ages = torch.tensor([[0, 61, 61, 62, 62, 63, 63], [0, 45, 45, 47, 0, 0, 0]])
    segments = torch.tensor([[0, 1, 1, 2, 2, 1, 1], [0, 1, 1, 2, 0, 0, 0]])
    return {"input_ids": ids, "attention_mask": mask, "ages": ages, "visit_segments": segments}


def reference_maps(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Logits and each BertSelfAttention's returned map, read by plain forward hooks."""
    maps: list[Tensor] = []
    handles = [
        m.register_forward_hook(lambda mod, args, out: maps.append(out[1]))
        for m in model.modules()
        if isinstance(m, BertSelfAttention)
    ]
    try:
        logits = model(**batch).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits, maps


def reference_rollout(maps: list[Tensor], mask: Tensor, row: int = 0) -> Tensor:
    tokens = mask.shape[1]
    eye = torch.eye(tokens, dtype=torch.float64)
    product = eye.expand(mask.shape[0], tokens, tokens)
    for a in maps:
        a_hat = a.detach().double().mean(dim=1) + eye
        product = (a_hat / a_hat.sum(dim=-1, keepdim=True)) @ product
    return (product[:, row] * mask.double()).float()


def test_a_cehr_bert_shaped_model_is_explained_without_an_adapter():
    model = build()
    wrapped = HuggingFaceModel(copy.deepcopy(model))
    assert not wrapped.causal and wrapped.readout == "cls"
    found = [type(m).__name__ for m in wrapped._attention_modules]
    assert found == ["BertSelfAttention"] * 3
    batch = patients()
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    logits, maps = reference_maps(reference, batch)
    assert len(maps) == 3
    grads = torch.autograd.grad(logits[:, 1].sum(), maps)
    mask = batch["attention_mask"]

    with torch.inference_mode():
        rollout = AttentionRollout(wrapped).attribute(**batch)["input_ids"]
        # the extra inputs reach the model unchanged: the same logits
        torch.testing.assert_close(wrapped(**batch)["logit"], logits.detach())
    chefer = CheferRelevance(wrapped).attribute(target_class_idx=1, **batch)["input_ids"]
    torch.testing.assert_close(rollout, reference_rollout(maps, mask), **TOL)
    eye = torch.eye(7, dtype=torch.float64).expand(2, 7, 7)
    relevance = eye
    for a, g in zip(maps, grads, strict=True):
        cam = (g.double() * a.detach().double()).clamp(min=0).mean(dim=1)
        relevance = relevance + cam @ relevance
    torch.testing.assert_close(chefer, (relevance[:, 0] * mask.double()).float(), **TOL)
    assert bool((rollout[1, 4:] == 0).all()) and bool((chefer[1, 4:] == 0).all())

    # gradient baselines read at the concept embeddings (get_input_embeddings)
    scores = InputXGradient(wrapped).attribute(target_class_idx=1, **batch)["input_ids"]
    embedded = reference.embeddings.concepts(batch["input_ids"]).detach().requires_grad_(True)
    handle = reference.embeddings.concepts.register_forward_hook(lambda m, a, o: embedded)
    try:
        (grad,) = torch.autograd.grad(reference(**batch).logits[:, 1].sum(), embedded)
    finally:
        handle.remove()
    expected = (grad * embedded).sum(dim=-1) * mask
    torch.testing.assert_close(scores, expected.detach(), rtol=1e-4, atol=1e-7)


class OwnAttention(nn.Module):
    """A non-standard attention block returning ``(output, post-softmax map)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, hidden: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        q, k, v = self.qkv(hidden).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
        weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)
        return hidden + self.out(weights @ v), weights[:, None]


class OwnModelForSequenceClassification(PreTrainedModel):
    """Declares its attention class as ``transformers`` models do."""

    config_class = BertConfig
    _can_record_outputs = {"attentions": OwnAttention}  # noqa: RUF012

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(OwnAttention(config.hidden_size) for _ in range(2))
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Any) -> Any:
        hidden = self.embed(input_ids)
        for block in self.blocks:
            hidden, _ = block(hidden, attention_mask.bool())
        return SequenceClassifierOutput(logits=self.head(hidden[:, 0]))


class UndeclaredModelForSequenceClassification(OwnModelForSequenceClassification):
    """The same model, declaring nothing: its attention modules must be listed."""

    _can_record_outputs = {}  # noqa: RUF012


def test_a_declared_attention_class_and_an_explicit_list_are_found():
    config = BertConfig(vocab_size=40, hidden_size=8, num_labels=2)
    torch.manual_seed(0)
    model = OwnModelForSequenceClassification(config).eval()
    batch = {k: v for k, v in patients().items() if k in ("input_ids", "attention_mask")}
    maps: list[Tensor] = []
    handles = [b.register_forward_hook(lambda m, a, o: maps.append(o[1])) for b in model.blocks]
    with torch.no_grad():
        model(**batch)
    for handle in handles:
        handle.remove()
    expected = reference_rollout(maps, batch["attention_mask"])
    declared = HuggingFaceModel(copy.deepcopy(model))
    assert len(declared._attention_modules) == 2
    undeclared = UndeclaredModelForSequenceClassification(config).eval()
    undeclared.load_state_dict(model.state_dict())
    with pytest.raises(TypeError, match="returned no attention maps"), torch.inference_mode():
        AttentionRollout(HuggingFaceModel(copy.deepcopy(undeclared))).attribute(**batch)
    listed = HuggingFaceModel(undeclared, attention_modules=list(undeclared.blocks))
    for wrapped in (declared, listed):
        with torch.inference_mode():
            got = AttentionRollout(wrapped).attribute(**batch)["input_ids"]
        torch.testing.assert_close(got, expected, **TOL)


def test_attention_modules_from_elsewhere_are_refused():
    model = build()
    with pytest.raises(ValueError, match="must be submodules of CehrBertForSequenceClassification"):
        HuggingFaceModel(model, attention_modules=[nn.Linear(2, 2)])

"""A model written the way PyHealth's ``Transformer`` is, for the compatibility tests.

What makes it "PyHealth-style" (and different from ehrlens's own models):

- ``set_attention_hooks(enabled)`` takes one argument and only sets a flag; the forward then
  registers a tensor hook on every live attention map (``attn.register_hook(save_grad)``),
  which autograd refuses under ``torch.no_grad()``;
- each attention module keeps ``attn.detach()`` whatever the flag, so the maps survive after
  capture is switched off and are never part of the graph;
- ``averaged=True`` gives single-head attention whose maps are ``[batch, seq, seq]``;
- features come as tuples: ``diagnoses = (value, mask)`` and ``visits = (time, value,
  mask)``, with the layout in ``model.dataset.input_processors[key].schema()``;
- there is no ``[CLS]`` token: ``get_relevance_tensor`` returns row 0 over every column, and
  the first code (or visit) is the readout.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

FEATURES = ("diagnoses", "visits")


class TupleLayout:
    """A PyHealth-like processor: only ``schema()``, the names of the tuple elements."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def schema(self) -> tuple[str, ...]:
        return self.names


class LegacyAttention(nn.Module):
    """Multi-head attention keeping ``attn.detach()`` and a gradient hook on the live map."""

    def __init__(self, dim: int, heads: int, averaged: bool) -> None:
        super().__init__()
        self.heads = 1 if averaged else heads
        self.averaged = averaged
        self.head_dim = dim // self.heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.attn_map: Tensor | None = None
        self.attn_grad: Tensor | None = None

    def save_attn_grad(self, gradient: Tensor) -> None:
        self.attn_grad = gradient

    def forward(self, x: Tensor, mask: Tensor, register_hook: bool) -> Tensor:
        batch, seq, dim = x.shape
        qkv = self.qkv(x).view(batch, seq, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:, None, None, :], -1e9)
        attn = scores.softmax(dim=-1)
        if self.averaged:
            attn = attn[:, 0]  # [batch, seq, seq]: the model's only head
            out = attn @ v[:, 0]
        else:
            out = (attn @ v).transpose(1, 2).reshape(batch, seq, dim)
        self.attn_map = attn.detach()
        if register_hook:
            attn.register_hook(self.save_attn_grad)
        return self.proj(out)


class LegacyBlock(nn.Module):
    def __init__(self, dim: int, heads: int, averaged: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = LegacyAttention(dim, heads, averaged)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: Tensor, mask: Tensor, register_hook: bool) -> Tensor:
        x = x + self.dropout(self.attention(self.norm(x), mask, register_hook))
        return x + self.ffn(x)


class PyHealthStyleTransformer(nn.Module):
    """Per-feature encoders over tuple features, read out at position 0 (no ``[CLS]``)."""

    def __init__(
        self,
        vocab: int = 30,
        dim: int = 16,
        heads: int = 2,
        layers: int = 2,
        averaged: bool = False,
    ) -> None:
        super().__init__()
        self.feature_keys = list(FEATURES)
        self.mode = "binary"
        self.dataset = SimpleNamespace(
            input_processors={
                "diagnoses": TupleLayout("value", "mask"),
                "visits": TupleLayout("time", "value", "mask"),
            }
        )
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.time_embedding = nn.Linear(1, dim)
        self.encoders = nn.ModuleDict(
            {
                key: nn.ModuleList(LegacyBlock(dim, heads, averaged) for _ in range(layers))
                for key in FEATURES
            }
        )
        self.fc = nn.Linear(len(FEATURES) * dim, 1)
        self._attention_hooks_enabled = False

    def set_attention_hooks(self, enabled: bool) -> None:
        self._attention_hooks_enabled = enabled

    def forward(self, **batch: Any) -> dict[str, Tensor]:
        values, mask = batch["diagnoses"]
        inputs = {"diagnoses": (self.embedding(values), mask.bool())}
        times, visits, visit_mask = batch["visits"]
        pooled = self.embedding(visits).sum(dim=2) + self.time_embedding(times[..., None])
        inputs["visits"] = (pooled, visit_mask.bool().any(dim=-1))
        readouts = []
        for key in FEATURES:
            x, real = inputs[key]
            for block in self.encoders[key]:
                x = block(x, real, self._attention_hooks_enabled)
            readouts.append(x[:, 0])
        logit = self.fc(torch.cat(readouts, dim=-1))
        return {"logit": logit, "y_prob": torch.sigmoid(logit)}

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        return {
            key: [
                (block.attention.attn_map, block.attention.attn_grad)
                for block in self.encoders[key]
            ]
            for key in self.feature_keys
        }

    def get_relevance_tensor(self, R: dict[str, Tensor], **data: Any) -> dict[str, Tensor]:
        return {key: r[:, 0] for key, r in R.items()}


def make_batch(batch: int = 3, seq: int = 6, visits: int = 4, codes: int = 3, seed: int = 0):
    """A PyHealth-style batch: tuple features, real positions first, padding (0) after."""
    generator = torch.Generator().manual_seed(seed)
    diagnoses = torch.randint(1, 30, (batch, seq), generator=generator)
    visit_codes = torch.randint(1, 30, (batch, visits, codes), generator=generator)
    for b in range(batch):
        diagnoses[b, seq - b :] = 0  # sample b has b padded codes
        visit_codes[b, visits - b :] = 0  # ... and b padded visits
        visit_codes[b, 0, codes - 1] = 0  # a padded code inside a real visit
    times = torch.arange(visits, dtype=torch.float32).repeat(batch, 1) * 30.0
    return {
        "patient_id": [f"p{b}" for b in range(batch)],
        "diagnoses": (diagnoses, diagnoses != 0),
        "visits": (times, visit_codes, visit_codes != 0),
        "label": torch.tensor([[1.0], [0.0], [1.0]][:batch]),
    }


def capture_by_hand(model: PyHealthStyleTransformer, batch: dict[str, Any], backward: bool):
    """The model's maps (and, with ``backward``, gradients of ``logit.sum()``) taken the way a
    PyHealth user does: hooks on, forward, hooks off, read the modules. Runs on a copy-free
    model in eval mode with autograd on; returns ``{key: [(map, grad | None), ...]}``."""
    model.eval()
    model.set_attention_hooks(True)
    try:
        with torch.enable_grad():
            logit = model(**batch)["logit"]
            if backward:
                logit[:, 0].sum().backward()
    finally:
        model.set_attention_hooks(False)
    return {
        key: [(a.detach().clone(), None if g is None else g.detach().clone()) for a, g in pairs]
        for key, pairs in model.get_attention_layers().items()
    }

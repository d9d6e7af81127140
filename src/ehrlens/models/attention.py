"""The one multi-head attention module of ehrlens and its encoder block.

Every model computes attention here, so capture is written once. While no hook listens,
:class:`MultiHeadAttention` computes attention with PyTorch's
:func:`~torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels, no
map formed), for training and inference alike. While a hook listens it forms the maps
explicitly and passes each post-softmax, pre-dropout map ``[batch, heads, seq, seq]`` to its
attention hooks (:meth:`MultiHeadAttention.register_attention_hook`, removable handles as
in PyTorch), or block by block of query rows to its attention block hooks
(:meth:`MultiHeadAttention.register_attention_block_hook`); :mod:`ehrlens.models.capture`
holds the hooks that store maps and gradients.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .fused_attention import attention_with_logsumexp

AttentionHook = Callable[["MultiHeadAttention", Tensor], None]
AttentionBlockHook = Callable[["MultiHeadAttention", slice, Tensor], None]
QueryKeyHook = Callable[["MultiHeadAttention", Tensor, Tensor, Tensor], None]
LogSumExpHook = Callable[["MultiHeadAttention", Tensor], None]
GradientBlockHook = Callable[["MultiHeadAttention", slice, Tensor, Tensor], None]
OutputHook = Callable[["MultiHeadAttention", Tensor], None]


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with key padding and attention hooks.

    Args:
        dim: model width ``D``; must be divisible by ``heads``.
        heads: number of heads ``H``.
        dropout: dropout on the attention weights (applied after hooks see them).

    Shapes:
        ``x``: ``[batch, seq, D]``; ``mask``: ``[batch, seq]`` bool, True = real position.
        Hooks receive ``[batch, H, seq, seq]`` post-softmax weights; padded keys get exactly 0,
        and a sample without any real key gets all-zero rows (its attention output is 0).

    Without hooks the forward is :func:`torch.nn.functional.scaled_dot_product_attention`
    with the key-padding mask (and ``dropout`` as its ``dropout_p`` in training); with hooks it
    is the explicit ``softmax(q k^T / sqrt(head_dim)) v`` of :meth:`attention_weights`. The two
    agree to floating-point rounding (tested in float64).

    Example:
        >>> mha = MultiHeadAttention(dim=8, heads=2)
        >>> handle = mha.register_attention_hook(lambda module, attn: print(attn.shape))
        >>> _ = mha(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool))
        torch.Size([1, 2, 3, 3])
        >>> handle.remove()
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"embedding dim {dim} must be divisible by heads {heads}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self._attention_hooks: OrderedDict[int, AttentionHook] = OrderedDict()
        self._attention_block_hooks: OrderedDict[int, AttentionBlockHook] = OrderedDict()
        self._query_key_hooks: OrderedDict[int, QueryKeyHook] = OrderedDict()
        self._logsumexp_hooks: OrderedDict[int, LogSumExpHook] = OrderedDict()
        self._gradient_hooks: OrderedDict[int, tuple[GradientBlockHook, OutputHook | None]] = (
            OrderedDict()
        )

    def register_attention_hook(self, hook: AttentionHook) -> RemovableHandle:
        """Call ``hook(module, attention)`` on every forward; returns a removable handle."""
        handle = RemovableHandle(self._attention_hooks)
        self._attention_hooks[handle.id] = hook
        return handle

    def register_attention_block_hook(self, hook: AttentionBlockHook) -> RemovableHandle:
        """Call ``hook(module, rows, weights)`` for each block of query rows of every forward.

        ``rows`` is a ``slice(start, stop)`` of query positions and ``weights`` their
        post-softmax map ``[batch, heads, stop - start, seq]``; the blocks of one forward come
        in order and cover every row once. While only block hooks listen (no
        :meth:`register_attention_hook` hook), the forward computes attention in blocks of
        :meth:`attention_block_rows` rows, so the per-head map ``[batch, heads, seq, seq]``
        never exists whole: a hook that keeps a head-fused map ``[batch, seq, seq]`` then
        costs ``1 / heads`` of the per-head map the explicit formula forms. The output is the
        same up to floating-point rounding. With a
        map hook also registered, block hooks get one block of all rows. Returns a removable
        handle.

        Example:
            >>> fused = {}
            >>> def keep(module, rows, weights):
            ...     fused.setdefault("map", weights.new_zeros(2, 5, 5))[:, rows] = weights.mean(1)
            >>> handle = mha.register_attention_block_hook(keep)
            >>> _ = mha(torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool))
            >>> handle.remove()
        """
        handle = RemovableHandle(self._attention_block_hooks)
        self._attention_block_hooks[handle.id] = hook
        return handle

    #: Most per-head weights one block holds (``batch * heads * rows * seq``): 4 Mi values,
    #: 16 MiB in float32, small enough for the allocator to reuse memory between blocks.
    block_values: int = 1 << 22

    def attention_block_rows(self, batch: int, seq: int) -> int:
        """Query rows per block when only block hooks listen.

        ``min(ceil(seq / (2 * heads)), block_values // (batch * heads * seq))``, at least 1:
        a block's per-head weights ``[batch, heads, rows, seq]`` hold at most half as many
        values as one head-fused map ``[batch, seq, seq]``, and at most
        :attr:`block_values`. Blocks that small are also faster than the whole map on CPU
        (they are reused from the allocator instead of being fresh pages each time).
        """
        by_map = math.ceil(seq / (2 * self.heads))
        by_size = self.block_values // max(1, batch * self.heads * seq)
        return max(1, min(by_map, by_size))

    def register_query_key_hook(self, hook: QueryKeyHook) -> RemovableHandle:
        """Call ``hook(module, q, k, mask)`` on every forward, before attention is formed.

        ``q``/``k`` are ``[batch, heads, seq, head_dim]``; with :meth:`attention_weights` they
        reproduce the attention map, in row blocks if wanted. They need no map: while only
        query-key (and log-sum-exp) hooks listen, the forward runs PyTorch's fused kernels.
        Returns a removable handle.

        Example:
            >>> kept = {}
            >>> handle = mha.register_query_key_hook(lambda m, q, k, mask: kept.update(q=q))
            >>> _ = mha(x, mask)
            >>> handle.remove()
        """
        handle = RemovableHandle(self._query_key_hooks)
        self._query_key_hooks[handle.id] = hook
        return handle

    def register_logsumexp_hook(self, hook: LogSumExpHook) -> RemovableHandle:
        """Call ``hook(module, logsumexp)`` on every forward with each query row's log-sum-exp
        of its scaled, masked scores ``[batch, heads, seq]``.

        While no map or block hook listens, the forward still runs a fused kernel (no map
        formed) that returns these with the output
        (:func:`~ehrlens.models.fused_attention.attention_with_logsumexp`); with queries and
        keys they give any weighted sum of the map's rows
        (:func:`~ehrlens.models.fused_attention.weighted_rows_of_map`). Returns a removable
        handle.

        Example:
            >>> kept = {}
            >>> handle = mha.register_logsumexp_hook(lambda m, lse: kept.update(lse=lse))
            >>> _ = mha(x, mask)
            >>> handle.remove()
        """
        handle = RemovableHandle(self._logsumexp_hooks)
        self._logsumexp_hooks[handle.id] = hook
        return handle

    def register_attention_gradient_hook(
        self, hook: GradientBlockHook, output_hook: OutputHook | None = None
    ) -> RemovableHandle:
        """In the backward pass, call ``hook(module, rows, weights, gradient)`` for each block
        of query rows: the post-softmax weights ``[batch, heads, len(rows), seq]`` and the
        gradient of the backward's target with respect to them (same shape).

        Neither the map nor its gradient is kept from the forward: while no map or block hook
        listens, the forward runs the fused kernel (keeping each row's log-sum-exp) and a
        tensor hook on the attention output recomputes, block by block of
        :meth:`attention_block_rows` rows, ``weights = exp(q k^T / sqrt(d) - logsumexp)`` and
        ``gradient = d_output v^T``, as flash attention's backward does. The blocks come in
        order and cover every row once; the output's own gradient is unchanged.
        ``output_hook(module, output)`` is called in the forward with the attention output
        ``[batch, heads, seq, head_dim]`` the backward starts from (differentiating it runs
        the hook). Weights after dropout have no such gradient: in training with dropout the
        forward raises. Returns a removable handle.

        Example:
            >>> seen = []
            >>> handle = mha.register_attention_gradient_hook(
            ...     lambda m, rows, a, g: seen.append((g * a).clamp(min=0).mean(1)))
            >>> mha(x, mask).sum().backward()
            >>> handle.remove()
        """
        handle = RemovableHandle(self._gradient_hooks)
        self._gradient_hooks[handle.id] = (hook, output_hook)
        return handle

    @property
    def has_attention_hooks(self) -> bool:
        """Whether any attention, query-key, log-sum-exp or gradient hook is registered."""
        return (
            bool(self._attention_hooks)
            or bool(self._attention_block_hooks)
            or bool(self._query_key_hooks)
            or bool(self._logsumexp_hooks)
            or bool(self._gradient_hooks)
        )

    @property
    def forms_maps(self) -> bool:
        """Whether the forward forms attention maps: a map or block hook listens. Otherwise it
        runs PyTorch's fused kernels (query-key and log-sum-exp hooks need no map)."""
        return bool(self._attention_hooks) or bool(self._attention_block_hooks)

    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        """Post-softmax weights ``[batch, heads, rows, seq]`` of queries ``q`` over keys ``k``.

        The forward pass computes its attention with this function, so a recomputation from
        captured queries and keys (all rows, or a block of rows) gives the same map.
        """
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        # The dtype's most negative value rather than -inf: exp() gives exactly 0 for padded
        # keys, and a row with no real key stays finite instead of NaN.
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        has_key = mask.any(dim=-1)
        if not bool(has_key.all()):  # no real key: attend to nothing, as SDPA does
            weights = weights * has_key[:, None, None, None].to(weights.dtype)
        return weights

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, seq, _ = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        for query_key_hook in tuple(self._query_key_hooks.values()):
            query_key_hook(self, q, k, mask)
        if not self.forms_maps:
            if (self._logsumexp_hooks or self._gradient_hooks) and seq > 0:
                dropout = self.dropout.p if self.training else 0.0
                if self._gradient_hooks and dropout > 0:
                    raise RuntimeError(
                        "attention gradient hooks need the weights without dropout: put the "
                        "model in eval mode (or use dropout 0) while they listen"
                    )
                out, logsumexp = attention_with_logsumexp(q, k, v, mask, dropout)
                for logsumexp_hook in tuple(self._logsumexp_hooks.values()):
                    logsumexp_hook(self, logsumexp)
                if self._gradient_hooks:
                    self._attach_gradient_hooks(q, k, v, mask, logsumexp, out)
            else:
                out = self.fast_attention(q, k, v, mask)
                for _, output_hook in tuple(self._gradient_hooks.values()):  # seq 0
                    if output_hook is not None:
                        output_hook(self, out)
        elif self._computes_in_blocks() and seq > 0:
            out = self._attend_in_blocks(q, k, v, mask)
        else:
            attention = self.attention_weights(q, k, mask)
            for attention_hook in tuple(self._attention_hooks.values()):
                attention_hook(self, attention)
            for block_hook in tuple(self._attention_block_hooks.values()):
                block_hook(self, slice(0, seq), attention)
            out = self.dropout(attention) @ v  # [batch, heads, seq, head_dim]
        return self.proj(out.transpose(1, 2).reshape(batch, seq, self.dim))

    def fast_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """``softmax(q k^T / sqrt(head_dim)) v`` by
        :func:`~torch.nn.functional.scaled_dot_product_attention`, no map formed:
        ``[batch, heads, seq, head_dim]``. Dropout (in training) acts on the weights as in
        the explicit path; a query without any real key gets 0. An empty sequence gives an
        empty output that is still computed from ``v``, so it stays in the autograd graph as
        any other output does (a gradient hook's ``output_hook`` anchors the backward on it).
        """
        if q.shape[2] == 0:
            return v[:, :, :0] * 0
        dropout = self.dropout.p if self.training else 0.0
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :].bool(), dropout_p=dropout
        )

    def _attach_gradient_hooks(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, logsumexp: Tensor, out: Tensor
    ) -> None:
        hooks = tuple(self._gradient_hooks.values())
        for _, output_hook in hooks:
            if output_hook is not None:
                output_hook(self, out)
        if not out.requires_grad:
            return
        q, k, v, logsumexp = q.detach(), k.detach(), v.detach(), logsumexp.detach()

        def on_output_gradient(grad_out: Tensor) -> None:
            batch, _, seq, _ = q.shape
            step = self.attention_block_rows(batch, seq)
            # Each block's weights are exp(q k^T / sqrt(d) - logsumexp), formed in place in
            # one buffer: every extra pass over a [batch, heads, rows, seq] block costs about
            # as much as its matrix product on CPU. Padded keys, and the rows of a sample
            # without any real key, are zeroed afterwards (only when the batch has them).
            scaled_q = q / math.sqrt(self.head_dim)
            # Contiguous once per layer, so no block's product copies them again.
            key_t = k.transpose(-2, -1).contiguous()
            value_t = v.transpose(-2, -1).contiguous()
            padded_keys = None if bool(mask.all()) else ~mask[:, None, None, :]
            has_key = mask.any(dim=-1)
            no_key = None if bool(has_key.all()) else ~has_key
            for start in range(0, seq, step):
                rows = slice(start, min(start + step, seq))
                weights = torch.matmul(scaled_q[:, :, rows], key_t)
                weights.sub_(logsumexp[:, :, rows, None]).exp_()
                if padded_keys is not None:
                    weights.masked_fill_(padded_keys, 0.0)
                if no_key is not None:
                    weights[no_key] = 0.0
                gradient = grad_out[:, :, rows].to(q.dtype) @ value_t
                for hook, _ in hooks:
                    hook(self, rows, weights, gradient)

        out.register_hook(on_output_gradient)

    def _computes_in_blocks(self) -> bool:
        """Block hooks listen and no hook needs the whole map."""
        return bool(self._attention_block_hooks) and not self._attention_hooks

    def _attend_in_blocks(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """``softmax(q k^T) v`` computed for blocks of query rows, each block shown to the
        block hooks: ``[batch, heads, seq, head_dim]``."""
        batch, _, seq, _ = q.shape
        step = self.attention_block_rows(batch, seq)
        hooks = tuple(self._attention_block_hooks.values())
        outputs = []
        for start in range(0, seq, step):
            rows = slice(start, min(start + step, seq))
            attention = self.attention_weights(q[:, :, rows], k, mask)
            for block_hook in hooks:
                block_hook(self, rows, attention)
            outputs.append(self.dropout(attention) @ v)
        return torch.cat(outputs, dim=2)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + FFN(LN(x))``.

    Shapes: ``x`` ``[batch, seq, D]``, ``mask`` ``[batch, seq]`` -> ``[batch, seq, D]``.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, ffn_mult: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_mult * dim, dim),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))

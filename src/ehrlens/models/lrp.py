"""AttnLRP rules as removable forward hooks (Achtibat et al., "AttnLRP: Attention-Aware
Layer-Wise Relevance Propagation for Transformers", ICML 2024).

Layer-wise relevance propagation in the gradient x input form: while the rules are attached,
every forward computes exactly the same values as without them, but its backward pass is
changed so that ``input * gradient`` at any layer is the relevance that the paper's rules
propagate to that layer. One backward pass from the explained logit then gives the relevance of
every input. The rules, each for the module it is attached to:

- **linear layers, additions** (``nn.Linear``, residual sums): the epsilon rule with epsilon
  -> 0 (LRP-0); its backward is the ordinary gradient. A bias keeps its share of the relevance.
- **layer normalisation** (``nn.LayerNorm``): the identity rule on the normalisation, i.e.
  the standard deviation is a constant in the backward pass (:func:`lrp_layer_norm`); the
  centring and the affine map are linear (epsilon rule).
- **RMS normalisation** (``y = w * x / rms(x)``, Llama-family models): the identity rule on
  the normalisation (``rms(x)`` constant), which leaves a diagonal map without bias: each
  unit passes its relevance on unchanged (:func:`lrp_rms_norm`).
- **element-wise non-linearities** (GELU, tanh, ReLU, SiLU): the identity rule, relevance out
  = relevance in per element; the backward multiplies by ``f(x) / x`` instead of ``f'(x)``
  (:func:`identity_rule`).
- **the two matrix products of attention** (``Q K^T`` and ``A V``): the uniform rule, each
  factor of a product gets half of its relevance. Halving the gradient of both products is the
  same as scaling the gradient of the query and key projections by 1/4 and of the value
  projection by 1/2 (:func:`scale_gradient`), which is how it is attached.
- **softmax**: the paper's Proposition 3.1, ``R_in = x * (R_out - s * sum(R_out))``, which in
  the gradient x input form is the ordinary gradient (nothing to change). Its linearisation has
  a bias term: the relevance ``sum(R_out) - sum(R_in)`` stays there, like a bias's share.

Relevance is conserved by every rule except the shares of biases (and of other additive
constants such as position encodings and [CLS] tokens) and of the softmax bias terms: the
explained logit equals the relevance of the inputs plus those shares.

Example:
    >>> block = model.encoders["diagnoses"].blocks[0]
    >>> mha, gelu = block.attention, block.ffn[1]
    >>> before = model(**batch)["logit"]
    >>> rules = attach_lrp_rules(norms=[block.norm1], activations=[gelu],
    ...                          projections=[(mha.qkv, qkv_gradient_scale(mha.dim))])
    >>> logit = model(**batch)["logit"]       # the same values as without the rules
    >>> rules.remove()
    >>> torch.equal(logit, before)
    True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "ELEMENTWISE_ACTIVATIONS",
    "LRPRules",
    "attach_lrp_rules",
    "identity_rule",
    "lrp_layer_norm",
    "lrp_rms_norm",
    "qkv_gradient_scale",
    "scale_gradient",
    "with_gradient_of",
]

#: Element-wise activation modules the identity rule is defined for (``f(0) = 0``).
ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.GELU,
    nn.Tanh,
    nn.ReLU,
    nn.SiLU,
    nn.LeakyReLU,
)


def with_gradient_of(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` exactly, with the backward pass of ``surrogate`` (same shape).

    ``value.detach() + (surrogate - surrogate.detach())``: the difference is exactly 0 in the
    forward pass, so the result has ``value``'s numbers and ``surrogate``'s gradient.
    """
    return value.detach() + (surrogate - surrogate.detach())


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: Tensor) -> Tensor:
        ctx.save_for_backward(factor)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor, None]:
        (factor,) = ctx.saved_tensors
        return grad_outputs[0] * factor, None


def scale_gradient(x: Tensor, factor: float | Tensor) -> Tensor:
    """``x`` unchanged in the forward pass; its gradient multiplied by ``factor`` in the
    backward pass (a number, or a tensor broadcast against ``x``, e.g. ``[channels]``).

    Example:
        >>> x = torch.ones(3, requires_grad=True)
        >>> scale_gradient(x, 0.5).sum().backward()
        >>> x.grad
        tensor([0.5000, 0.5000, 0.5000])
    """
    factor_tensor = torch.as_tensor(factor, dtype=x.dtype, device=x.device)
    return _ScaleGradient.apply(x, factor_tensor)


def identity_rule(x: Tensor, y: Tensor) -> Tensor:
    """``y = f(x)`` (element-wise), with the backward pass ``grad * f(x) / x``.

    Then ``x * grad_x == y * grad_y`` element by element: each unit passes its relevance on
    unchanged. Where ``x`` is exactly 0 the unit passes nothing (its relevance is 0 too).

    Shapes: ``x``, ``y``: any, equal.
    """
    ratio = torch.where(x != 0, y / torch.where(x != 0, x, torch.ones_like(x)), 0.0)
    return with_gradient_of(y, x * ratio.detach())


def lrp_layer_norm(module: nn.LayerNorm, x: Tensor, y: Tensor) -> Tensor:
    """``y = module(x)``, with the backward pass of the layer norm whose standard deviation is
    a constant: ``(x - mean(x)) / std.detach() * weight + bias`` (identity rule on the
    normalisation, epsilon rule on the centring and the affine map).

    Shapes: ``x``, ``y``: ``[..., D]`` (``module.normalized_shape == (D,)``).
    """
    dims = tuple(range(-len(module.normalized_shape), 0))
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    centred = work - work.mean(dim=dims, keepdim=True)
    std = (centred.pow(2).mean(dim=dims, keepdim=True) + module.eps).sqrt()
    surrogate = centred / std.detach()
    if module.weight is not None:
        surrogate = surrogate * module.weight
    if module.bias is not None:
        surrogate = surrogate + module.bias
    return with_gradient_of(y, surrogate.to(y.dtype))


def lrp_rms_norm(x: Tensor, y: Tensor) -> Tensor:
    """``y = rms_norm(x) = w * x / rms(x)``, with the backward pass of ``rms(x)`` held
    constant: ``grad * w / rms(x)``, which is ``grad * y / x`` element by element, so
    ``x * grad_x == y * grad_y`` (the ratio is read from the forward's own values, in its
    precision; where ``x`` is exactly 0 the unit passes nothing).

    Shapes: ``x``, ``y``: ``[..., D]``, equal.

    Example:
        >>> x = torch.tensor([[1.0, -2.0]], requires_grad=True)
        >>> y = x / x.pow(2).mean(-1, keepdim=True).sqrt()
        >>> (lrp_rms_norm(x, y) * torch.tensor([[1.0, 1.0]])).sum().backward()
        >>> torch.allclose(x * x.grad, y.detach())
        True
    """
    return identity_rule(x, y)


def qkv_gradient_scale(dim: int, device: Any = None) -> Tensor:
    """Gradient factors ``[3 * dim]`` of a fused query/key/value projection: 1/4 on the
    query and key channels, 1/2 on the value channels (the uniform rule on ``Q K^T`` and on
    ``A V``)."""
    return torch.cat(
        [torch.full((2 * dim,), 0.25, device=device), torch.full((dim,), 0.5, device=device)]
    )


class LRPRules:
    """AttnLRP rules attached to modules as forward hooks (removable, as in PyTorch).

    Only forwards of the thread that attached the rules are changed; other threads run the
    plain modules. :meth:`remove` removes every hook.

    Args:
        norms: layer norms (``nn.LayerNorm``) that get :func:`lrp_layer_norm`.
        activations: element-wise activation modules that get :func:`identity_rule`.
        projections: ``(module, factor)`` pairs: the module's output gradient is multiplied
            by ``factor`` (a number or a ``[channels]`` tensor), e.g. attention projections.
        rms_norms: RMS normalisation modules (``y = w * x / rms(x)``) that get
            :func:`lrp_rms_norm`.

    Example:
        >>> block = model.encoders["diagnoses"].blocks[0]
        >>> rules = LRPRules([block.norm1], [block.ffn[1]], [(block.attention.proj, 1.0)])
        >>> try:
        ...     logit = model(**batch)["logit"]   # forward, then backward from the logit
        ...     logit.sum().backward()
        ... finally:
        ...     rules.remove()
        >>> model.zero_grad()
    """

    def __init__(
        self,
        norms: Iterable[nn.LayerNorm] = (),
        activations: Iterable[nn.Module] = (),
        projections: Iterable[tuple[nn.Module, float | Tensor]] = (),
        rms_norms: Iterable[nn.Module] = (),
    ) -> None:
        self._thread = threading.get_ident()
        self.handles: list[RemovableHandle] = []
        for norm in rms_norms:
            self.handles.append(norm.register_forward_hook(self._rms_norm_hook))
        for norm in norms:
            if not isinstance(norm, nn.LayerNorm):
                raise TypeError(f"lrp_layer_norm is for nn.LayerNorm, got {type(norm).__name__}")
            self.handles.append(norm.register_forward_hook(self._norm_hook))
        for activation in activations:
            if not isinstance(activation, nn.Module):
                raise TypeError(
                    f"the identity rule is attached to activation modules, got "
                    f"{type(activation).__name__}"
                )
            self.handles.append(activation.register_forward_hook(self._activation_hook))
        for module, factor in projections:
            self.handles.append(module.register_forward_hook(self._projection_hook(factor)))

    def _mine(self) -> bool:
        return threading.get_ident() == self._thread and torch.is_grad_enabled()

    def _norm_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Any:
        if not self._mine():
            return None
        return lrp_layer_norm(module, inputs[0], output)  # type: ignore[arg-type]

    def _rms_norm_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Any:
        if not self._mine():
            return None
        return lrp_rms_norm(inputs[0], output)

    def _activation_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Any:
        if not self._mine():
            return None
        return identity_rule(inputs[0], output)

    def _projection_hook(
        self, factor: float | Tensor
    ) -> Callable[[nn.Module, tuple[Any, ...], Tensor], Any]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Any:
            if not self._mine():
                return None
            return scale_gradient(output, factor)

        return hook

    def remove(self) -> None:
        """Remove every hook (the modules are plain again)."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def attach_lrp_rules(
    norms: Sequence[nn.LayerNorm] = (),
    activations: Sequence[nn.Module] = (),
    projections: Sequence[tuple[nn.Module, float | Tensor]] = (),
) -> LRPRules:
    """Attach the AttnLRP rules (see :class:`LRPRules`); call ``.remove()`` to detach them."""
    return LRPRules(norms, activations, projections)


#: Modules whose forward is linear in their input (or that hold only linear code around
#: submodules the rules cover): nothing to attach to them.
_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Dropout,
    nn.Identity,
    nn.Sequential,
    nn.ModuleList,
    nn.ModuleDict,
)


class LRPRulesMixin:
    """``set_lrp_rules(enabled)`` for models built from ehrlens's encoder modules.

    The rules attach to every ``nn.LayerNorm``, every element-wise activation
    (:data:`ELEMENTWISE_ACTIVATIONS`) and every
    :class:`~ehrlens.models.attention.MultiHeadAttention`'s query/key/value projection between
    the per-unit embeddings (``get_embedding_layers()``, where relevance is read) and the
    output. A module of any other kind there is refused with a ``TypeError`` naming it, since
    no rule says how relevance passes through it.

    A model lists the modules whose own forward is linear (residual sums, concatenations,
    pooling by a mean) in :meth:`lrp_linear_modules`.
    """

    def lrp_linear_modules(self) -> tuple[type[nn.Module], ...]:
        """Container or model classes whose own code is linear in its inputs."""
        return ()

    def _lrp_rules(self) -> LRPRules:
        from .attention import MultiHeadAttention

        assert isinstance(self, nn.Module)
        get_layers = getattr(self, "get_embedding_layers", None)
        embeddings: dict[str, nn.Module] = get_layers() if callable(get_layers) else {}
        skipped: set[int] = set()
        for layer in embeddings.values():
            skipped.update(id(m) for m in layer.modules())
        linear = _LINEAR_MODULES + self.lrp_linear_modules() + (type(self),)
        norms: list[nn.LayerNorm] = []
        activations: list[nn.Module] = []
        projections: list[tuple[nn.Module, float | Tensor]] = []
        covered: set[int] = set()
        for name, module in self.named_modules():
            if id(module) in skipped or id(module) in covered:
                continue
            if isinstance(module, MultiHeadAttention):
                scale = qkv_gradient_scale(module.dim, device=module.qkv.weight.device)
                projections.append((module.qkv, scale))
                covered.update(id(m) for m in module.modules())
            elif isinstance(module, nn.LayerNorm):
                norms.append(module)
            elif isinstance(module, ELEMENTWISE_ACTIVATIONS):
                activations.append(module)
            elif not isinstance(module, linear):
                raise TypeError(
                    f"{type(self).__name__}: no AttnLRP rule for module '{name}' "
                    f"({type(module).__name__}); rules exist for linear layers, layer norms, "
                    "element-wise activations and ehrlens's MultiHeadAttention"
                )
        return LRPRules(norms, activations, projections)

    def set_lrp_rules(self, enabled: bool) -> None:
        """Attach (``True``) or remove (``False``) the AttnLRP rules.

        While attached, forwards compute the same values and their backward pass propagates
        relevance (``input * gradient``) by the rules of :mod:`ehrlens.models.lrp`.
        Enabling twice keeps one set of rules.
        """
        current: LRPRules | None = self.__dict__.pop("_lrp_rules_attached", None)
        if current is not None:
            current.remove()
        if enabled:
            self.__dict__["_lrp_rules_attached"] = self._lrp_rules()

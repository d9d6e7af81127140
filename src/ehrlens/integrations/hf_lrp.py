"""AttnLRP rules for ``transformers`` encoders and decoders (see :mod:`ehrlens.models.lrp`).

Each rule keeps the forward values and changes the backward pass so that ``input * gradient``
is the relevance AttnLRP propagates. What each layer of the supported families needs, and why:

- **LayerNorm** (BERT, GPT-2): the identity rule on the normalisation (its standard deviation
  held constant), the epsilon rule on the centring and the affine map
  (:func:`~ehrlens.models.lrp.lrp_layer_norm`).
- **RMSNorm** (Llama, Qwen2, Mistral): ``y = w * x / rms(x)``. Holding ``rms(x)`` constant, as
  the identity rule does for a layer norm's deviation, leaves ``y = k * x`` with ``k = w /
  rms(x)`` a constant per element: a diagonal linear map without bias, so each unit passes
  its relevance on unchanged, ``R_x = x * k * g = y * g = R_y``. That is the identity rule
  with the ratio ``y / x`` the forward computed (:func:`~ehrlens.models.lrp.lrp_rms_norm`).
- **Element-wise activations** (GELU, SiLU, tanh): the identity rule.
- **Gated MLP** (Llama, Qwen2, Mistral: ``down(act(gate(x)) * up(x))``): the product of two
  factors that both depend on the input gets the uniform rule, each factor half its relevance
  (the same rule as for the attention products); the gradient into ``gate_proj`` and
  ``up_proj`` is halved. ``act`` gets the identity rule, so the gate's half reaches
  ``gate_proj`` whole.
- **Rotary position embeddings**: ``q' = q * cos + rotate_half(q) * sin`` is a linear map of
  ``q`` (and of ``k``) with no bias, ``cos`` and ``sin`` constants of the positions; a linear
  map without bias conserves ``input * gradient`` exactly (``q^T M^T g = (M q)^T g``), so the
  epsilon rule (the plain gradient) is the rule and nothing is attached. The same holds for
  grouped-query attention's repetition of keys and values (a copy) and for the causal and
  sliding-window masks (constants added to scores whose weights are then exactly 0).
- **Attention products** ``Q K^T`` and ``A V``: the uniform rule; the query and key
  projections' gradient is scaled by 1/4, the value projection's by 1/2 (GPT-2's fused
  ``c_attn``: per channel).
- **softmax**: the ordinary gradient (Proposition 3.1 of the paper), with its bias share.

Architectures other than :data:`LRP_MODEL_TYPES` are refused by name: their layers (other
norms such as Gemma's ``1 + w``, parallel blocks, soft-capping) have no rule checked here.

Example:
    >>> rules = lrp_rules_for(bert)     # attached; forwards compute the same values
    >>> ids = tokenizer(["chest pain"], return_tensors="pt")["input_ids"]
    >>> embedded = bert.get_input_embeddings()(ids).detach().requires_grad_()
    >>> output = bert(inputs_embeds=embedded).last_hidden_state[0, 0].sum()  # what is explained
    >>> output.backward()
    >>> relevance = (embedded * embedded.grad).sum(-1)  # AttnLRP: input x gradient, [1, tokens]
    >>> rules.remove()
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..models.lrp import ELEMENTWISE_ACTIVATIONS, LRPRules, qkv_gradient_scale

__all__ = ["LRP_MODEL_TYPES", "bert_lrp_rules", "decoder_lrp_rules", "lrp_rules_for"]

#: ``config.model_type`` values whose every layer has an AttnLRP rule here.
LRP_MODEL_TYPES = ("bert", "gpt2", "llama", "qwen2", "mistral")
_GATED_DECODERS = ("llama", "qwen2", "mistral")


def _is_activation(module: nn.Module) -> bool:
    return isinstance(module, ELEMENTWISE_ACTIVATIONS) or (
        type(module).__module__ == "transformers.activations"
    )


def _is_rms_norm(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and isinstance(
        getattr(module, "weight", None), Tensor
    )


def lrp_rules_for(model: Any) -> LRPRules:
    """The AttnLRP rules of ``model``, attached, by ``config.model_type``.

    Raises:
        TypeError: an architecture without rules here, naming the class and model type.
    """
    model_type = getattr(model.config, "model_type", None)
    if model_type == "bert":
        return bert_lrp_rules(model)
    if model_type == "gpt2" or model_type in _GATED_DECODERS:
        return decoder_lrp_rules(model)
    raise TypeError(
        f"{type(model).__name__} (model_type {model_type!r}) has no AttnLRP rules here: they "
        f"are written for the layers of {', '.join(LRP_MODEL_TYPES)} models"
    )


def bert_lrp_rules(model: Any) -> LRPRules:
    """The AttnLRP rules of a BERT-family encoder (also inside a custom model), attached."""
    name = type(model).__name__
    norms: list[nn.LayerNorm] = []
    activations: list[nn.Module] = []
    projections: list[tuple[nn.Module, float | Tensor]] = []
    for module_name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            norms.append(module)
        elif _is_activation(module):
            activations.append(module)
        projection = [getattr(module, n, None) for n in ("query", "key", "value")]
        linear = [p for p in projection if isinstance(p, nn.Linear)]
        if len(linear) == 3:
            projections += list(zip(linear, (0.25, 0.25, 0.5), strict=True))
        act = getattr(module, "intermediate_act_fn", None)
        if act is not None and not isinstance(act, nn.Module):
            raise TypeError(
                f"{name}: the activation of '{module_name}' is a plain function, so the "
                "identity rule cannot be attached to it; use a config whose hidden_act is a "
                "name (e.g. 'gelu')"
            )
    if not projections:
        raise TypeError(f"{name}: no self-attention with query/key/value projections found")
    return LRPRules(norms, activations, projections)


def decoder_lrp_rules(model: Any) -> LRPRules:
    """The AttnLRP rules of a GPT-2, Llama, Qwen2 or Mistral model, attached (see the module
    docstring for each rule)."""
    name = type(model).__name__
    norms: list[nn.LayerNorm] = []
    rms_norms: list[nn.Module] = []
    activations: list[nn.Module] = []
    projections: list[tuple[nn.Module, float | Tensor]] = []
    attention = 0
    for module_name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            norms.append(module)
        elif _is_rms_norm(module):
            rms_norms.append(module)
        elif _is_activation(module):
            activations.append(module)
        c_attn = getattr(module, "c_attn", None)
        if c_attn is not None and getattr(module, "is_cross_attention", False):
            raise TypeError(f"{name}: '{module_name}' is cross-attention; no rule here")
        if c_attn is not None:  # GPT-2: one projection to [query | key | value]
            weight = c_attn.weight
            dim = weight.shape[1] // 3
            projections.append((c_attn, qkv_gradient_scale(dim, device=weight.device)))
            attention += 1
        qkv = [getattr(module, n, None) for n in ("q_proj", "k_proj", "v_proj")]
        linear = [p for p in qkv if isinstance(p, nn.Linear)]
        if len(linear) == 3:
            projections += list(zip(linear, (0.25, 0.25, 0.5), strict=True))
            attention += 1
        gate, up = (getattr(module, n, None) for n in ("gate_proj", "up_proj"))
        if isinstance(gate, nn.Linear) and isinstance(up, nn.Linear):
            act = getattr(module, "act_fn", None)
            if not isinstance(act, nn.Module):
                raise TypeError(
                    f"{name}: the activation of '{module_name}' is not a module, so the "
                    "identity rule cannot be attached to it"
                )
            projections += [(gate, 0.5), (up, 0.5)]
    if not attention:
        raise TypeError(f"{name}: no self-attention with query/key/value projections found")
    return LRPRules(norms, activations, projections, rms_norms=rms_norms)

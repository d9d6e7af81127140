"""The two-level interpretability interface and the one capture context manager.

- :class:`AttentionInterpretable`: forward capture of post-softmax attention maps only. No
  autograd hook is involved, so capture works under ``torch.no_grad()`` and
  ``torch.inference_mode()``. Enough for attention rollout and attention flow.
- :class:`GradientInterpretable`: also captures each map's gradient after ``.backward()``.
  Needed by Chefer et al.'s relevance. :data:`CheferInterpretable` is the same class.

Interpreters check the level they need with ``isinstance``. A third-party class that has the
methods opts in with ``AttentionInterpretable.register(cls)`` (or ``GradientInterpretable``).

Everything an interpreter may know about a model beyond the three required methods goes
through this module, typed, and nowhere else: :func:`capabilities` (the optional capture and
readout features, :class:`~ehrlens.core.interpretable.Capabilities`), :func:`describe` (feature
keys, task mode, output size, pad ids, tuple layouts), :func:`attention_layers` (the captured
maps, checked and shaped ``[batch, heads, seq, seq]``), :func:`readout_weights` and
:func:`select_input_positions`. Models written for the one-argument interface
(``set_attention_hooks(enabled)``, maps kept as the model likes, head-averaged maps, tuple
features, readout only through ``get_relevance_tensor``) are served by the same functions.

Every interpreter runs the model through :func:`capture_attention`, which enables capture at
the level asked for, runs the forward in eval mode, and always disables capture and restores
the caller's train/eval mode.

Threads: capture state lives on the model, so explanations of one model are serialised by a
per-model lock (:func:`model_lock`, taken by :func:`eval_mode` and so by
:func:`capture_attention`): two threads explaining the same model, with one interpreter each,
take turns and both get the results they would get alone. Different models run in parallel.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..core.interpretable import (
    AttentionHeads,
    AttentionInterpretable,
    Capabilities,
    CheferInterpretable,
    ClearableCapture,
    EmbeddingLayers,
    ForwardOnlyCapture,
    GradientFusion,
    GradientFusionCapture,
    GradientInterpretable,
    KeyCapture,
    LRPRulesModel,
)
from ..core.modes import eval_mode, model_lock
from ..data.dataset import FittedSchema
from ..data.processors import FeatureProcessor

#: Pad id of features a model does not name in ``pad_ids``.
DEFAULT_PAD_ID = 0

_DETECTED: weakref.WeakKeyDictionary[type, Capabilities] = weakref.WeakKeyDictionary()
_DETECTED_GUARD = threading.Lock()


# ------------------------------------------------------------------------- capabilities
def capabilities(model: Any) -> Capabilities:
    """What ``model`` offers beyond the required methods.

    A class declares it in ``interpret_capabilities`` (ehrlens's models and adapters do).
    For a class that declares nothing (e.g. one written for PyHealth's interface and opted in
    with ``GradientInterpretable.register``), it is read once from the class itself: the
    keyword arguments ``set_attention_hooks`` accepts (``capture_gradients``,
    ``head_fusion``, ``keys_only``) and the optional methods it defines. Cached per class.

    Example:
        >>> capabilities(model).forward_only     # capture under torch.inference_mode()?
        True
    """
    cls = type(model)
    declared = getattr(cls, "interpret_capabilities", None)
    if isinstance(declared, Capabilities):
        return declared
    with _DETECTED_GUARD:
        found = _DETECTED.get(cls)
        if found is None:
            found = _DETECTED[cls] = _detect_capabilities(cls)
    return found


def _detect_capabilities(cls: type) -> Capabilities:
    hooks = getattr(cls, "set_attention_hooks", None)
    try:
        parameters = inspect.signature(hooks).parameters if callable(hooks) else {}
    except (TypeError, ValueError):  # builtins without a signature
        parameters = {}
    names = set(parameters)
    readout = getattr(cls, "get_readout_weights", None)
    return Capabilities(
        forward_only="capture_gradients" in names,
        fusion_at_capture="head_fusion" in names,
        key_capture="keys_only" in names and callable(getattr(cls, "get_attention_keys", None)),
        stated_readout=callable(readout)
        and readout is not AttentionInterpretable.get_readout_weights,
        embedding_layers=callable(getattr(cls, "get_embedding_layers", None)),
        clear_capture=callable(getattr(cls, "clear_attention_capture", None)),
        gradient_fusion="gradient_fusion" in names
        and callable(getattr(cls, "get_fused_gradients", None))
        and callable(getattr(cls, "get_gradient_anchors", None)),
        gradient_routing=callable(getattr(cls, "route_fused_gradients", None)),
        lrp_rules=callable(getattr(cls, "set_lrp_rules", None)),
    )


# ------------------------------------------------------------------------- description
@dataclass(frozen=True)
class ModelDescription:
    """What interpreters may read about a model besides its attention (all optional).

    Attributes:
        name: the model's class name (for messages).
        feature_keys: the features it explains, or ``None`` when it does not say.
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"``, ``"regression"`` or ``None``.
        output_size: logit columns, or ``None``.
        pad_ids: ``{feature: pad id | None}``; features not named use :data:`DEFAULT_PAD_ID`.
        layouts: for features given as tuples of tensors, the name of each element
            (``("value", "mask")``, ``("time", "value", "mask")``).
        processors: ``{feature: fitted processor}`` of a model built from a schema
            (``model.schema``); they lay out its inputs. Empty for other models.
        unit_positions: features whose every input unit is its own attention position
            (``model.unit_position_keys``: a code-level model on visits, whose attention
            scores each code). Elsewhere a position holding several units (a visit of
            codes, a step of values) gets one attention score for all of them.
        single_positions: features whose float vector ``[batch, features]`` is one attention
            position (``model.single_position_keys``: PyHealth's ``tensor`` and multi-hot
            features); they get one score per sample, ``[batch, 1]``.
    """

    name: str
    feature_keys: tuple[str, ...] | None = None
    mode: str | None = None
    output_size: int | None = None
    pad_ids: Mapping[str, int | None] = field(default_factory=dict)
    layouts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    processors: Mapping[str, FeatureProcessor] = field(default_factory=dict)
    unit_positions: frozenset[str] = frozenset()
    single_positions: frozenset[str] = frozenset()

    def pad_id(self, key: str) -> int | None:
        """The pad id of feature ``key`` (``None``: every id is real)."""
        return self.pad_ids.get(key, DEFAULT_PAD_ID)


def describe(model: Any) -> ModelDescription:
    """The optional attributes of the contract, read once: ``feature_keys``, ``mode``,
    ``output_size``, ``pad_ids``, ``unit_position_keys``, ``single_position_keys``, the
    fitted processors of ``schema``, and tuple layouts: the model's ``feature_layouts``, or
    a PyHealth-style ``model.dataset.input_processors[key].schema()``.

    Example:
        >>> describe(model).mode, describe(model).feature_keys
        ('binary', ('diagnoses', 'procedures', 'drugs'))
    """
    keys = getattr(model, "feature_keys", None)
    feature_keys = tuple(str(k) for k in keys) if keys else None
    mode = getattr(model, "mode", None)
    outputs = getattr(model, "output_size", None)
    pad_ids = getattr(model, "pad_ids", None)
    schema = getattr(model, "schema", None)
    units = getattr(model, "unit_position_keys", None)
    singles = getattr(model, "single_position_keys", None)
    return ModelDescription(
        name=type(model).__name__,
        feature_keys=feature_keys,
        mode=mode if isinstance(mode, str) else None,
        output_size=outputs if isinstance(outputs, int) and not isinstance(outputs, bool) else None,
        pad_ids=dict(pad_ids) if isinstance(pad_ids, Mapping) else {},
        layouts={**_processor_layouts(model, feature_keys or ()), **_stated_layouts(model)},
        processors=dict(schema.input_processors) if isinstance(schema, FittedSchema) else {},
        unit_positions=_key_set(units),
        single_positions=_key_set(singles),
    )


def _key_set(value: Any) -> frozenset[str]:
    """``value`` as a set of feature keys; anything but a collection of strings is none."""
    if isinstance(value, (set, frozenset, list, tuple)) and all(isinstance(k, str) for k in value):
        return frozenset(value)
    return frozenset()


def _stated_layouts(model: Any) -> dict[str, tuple[str, ...]]:
    """``model.feature_layouts`` (``{key: element names}``), where a model states them."""
    stated = getattr(model, "feature_layouts", None)
    if not isinstance(stated, Mapping):
        return {}
    return {
        str(k): tuple(v)
        for k, v in stated.items()
        if isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v)
    }


def _processor_layouts(model: Any, keys: Sequence[str]) -> dict[str, tuple[str, ...]]:
    processors = getattr(getattr(model, "dataset", None), "input_processors", None)
    if not isinstance(processors, Mapping):
        return {}
    layouts = {}
    for key in keys:
        schema = getattr(processors.get(key), "schema", None)
        if callable(schema):
            names = schema()
            if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
                layouts[key] = tuple(names)
    return layouts


def feature_layout(description: ModelDescription, key: str, length: int) -> tuple[str, ...]:
    """The element names of a tuple feature of ``length`` tensors (``()`` when unknown).

    The model's layout (``dataset.input_processors[key].schema()``); a tuple one element
    longer than a layout without ``"mask"`` carries the mask last (as PyHealth's
    ``StageAttentionNet`` accepts it). Without a layout: ``(value,)``, ``(value, mask)`` or
    ``(time, value, mask)`` by length.

    Example:
        >>> feature_layout(describe(model), "labs", 3)     # schema ("time", "value")
        ('time', 'value', 'mask')
    """
    layout = description.layouts.get(key)
    if layout is None:
        return {1: ("value",), 2: ("value", "mask"), 3: ("time", "value", "mask")}.get(length, ())
    if length == len(layout) + 1 and "mask" not in layout:
        return (*layout, "mask")
    return layout


def feature_value(
    description: ModelDescription, key: str, feature: Any
) -> tuple[Tensor, Tensor | None]:
    """``(values, mask)`` of one feature as the batch holds it.

    A tensor is its own value (mask ``None``). A tuple is read by its layout (``"value"`` and
    ``"mask"`` elements, see :func:`feature_layout`), or without one as ``(value, mask)`` or
    ``(time, value, mask)``.

    Raises:
        ValueError: a tuple that matches neither, naming the feature.

    Example:
        >>> values, mask = feature_value(describe(model), "diagnoses", batch["diagnoses"])
        >>> values.shape, mask                # [batch, visits, codes]; a plain tensor: no mask
        (torch.Size([8, 7, 5]), None)
    """
    if isinstance(feature, Tensor):
        return feature, None
    if not isinstance(feature, (tuple, list)) or not all(isinstance(f, Tensor) for f in feature):
        raise TypeError(
            f"feature '{key}': expected a tensor or a tuple of tensors, got "
            f"{type(feature).__name__}"
        )
    layout = feature_layout(description, key, len(feature))
    if "value" not in layout or len(layout) != len(feature):
        schema = description.layouts.get(key)
        expected = (
            f"its processor's schema() names {schema}: expected {len(schema)} tensors, or "
            f"{len(schema) + 1} with the mask last"
            if schema is not None
            else "expected (value, mask) or (time, value, mask), or a model whose "
            "dataset.input_processors[key].schema() names the elements"
        )
        raise ValueError(
            f"feature '{key}': a tuple of {len(feature)} tensors whose layout is unknown; "
            f"{expected}"
        )
    mask = feature[layout.index("mask")] if "mask" in layout else None
    return feature[layout.index("value")], mask


def input_view(description: ModelDescription, batch: Mapping[str, Any]) -> dict[str, Any]:
    """``batch`` with every tuple feature replaced by its value tensor and its mask moved to
    ``batch["masks"]`` (reduced to one flag per step for numeric ``[batch, steps, features]``
    values), the form the score mapping reads.

    Example:
        >>> view = input_view(describe(model), batch)
        >>> view["diagnoses"].shape               # [batch, visits, codes]
        torch.Size([8, 7, 5])
    """
    keys = description.feature_keys or tuple(batch)
    view = dict(batch)
    masks = dict(batch.get("masks") or {})
    for key in keys:
        feature = batch.get(key)
        if isinstance(feature, (tuple, list)):
            values, mask = feature_value(description, key, feature)
            view[key] = values
            if mask is not None and key not in masks:
                if values.is_floating_point() and mask.dim() == values.dim() == 3:
                    mask = mask.to(torch.bool).any(dim=-1)
                masks[key] = mask
    view["masks"] = masks
    return view


# ------------------------------------------------------------------------- captured maps
def attention_layers(model: Any, detach: bool = False) -> dict[str, list[tuple[Tensor, Any]]]:
    """``model.get_attention_layers()``, checked: maps ``[batch, heads, seq, seq]``.

    Head-averaged maps ``[batch, seq, seq]`` (and their gradients) get a head dimension of 1.
    With ``detach``, maps and gradients are detached (a model may keep them in its graph).

    Raises:
        RuntimeError: the model returned no attention layers (for a feature, or at all).
        ValueError: a map or gradient of another shape, naming feature and layer.

    Example:
        >>> with capture_attention(model, batch):
        ...     layers = attention_layers(model)     # {"diagnoses": [(attn, None), ...]}
    """
    return check_attention_layers(model.get_attention_layers(), type(model).__name__, detach)


def check_attention_layers(
    raw: Any, owner: str, detach: bool = False
) -> dict[str, list[tuple[Tensor, Any]]]:
    """Check and shape ``{key: [(map, grad), ...]}`` as :func:`attention_layers` does;
    ``owner`` names the model in errors."""
    if not isinstance(raw, Mapping) or not raw:
        raise RuntimeError(
            f"{owner}.get_attention_layers() returned no attention layers; "
            "attention-based methods need at least one layer per feature"
        )
    layers: dict[str, list[tuple[Tensor, Any]]] = {}
    for key, pairs in raw.items():
        if not pairs:
            raise RuntimeError(
                f"feature '{key}': {owner} returned no attention layers; "
                "attention-based methods need at least one"
            )
        checked = []
        for index, pair in enumerate(pairs):
            attention, gradient = pair
            attention = _as_heads(key, index, "map", attention)
            if gradient is not None:
                gradient = _as_heads(key, index, "gradient", gradient)
            if detach:
                attention = attention.detach()
                gradient = None if gradient is None else gradient.detach()
            checked.append((attention, gradient))
        layers[str(key)] = checked
    return layers


def _as_heads(key: str, index: int, what: str, tensor: Any) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise ValueError(
            f"feature '{key}', layer {index}: the attention {what} is "
            f"{type(tensor).__name__}, not a tensor (run a captured forward first)"
        )
    if tensor.dim() == 3:
        tensor = tensor[:, None]
    if tensor.dim() != 4 or tensor.shape[-1] != tensor.shape[-2]:
        raise ValueError(
            f"feature '{key}', layer {index}: expected an attention {what} [batch, heads, seq, "
            f"seq] or [batch, seq, seq], got shape {tuple(tensor.shape)}"
        )
    return tensor


# ------------------------------------------------------------------------- readout
def readout_weights(
    model: Any,
    batch: Mapping[str, Any],
    layers: Mapping[str, Sequence[Tensor]] | None = None,
) -> dict[str, Tensor] | None:
    """Readout weights ``{key: [batch, seq]}`` over attention positions, or ``None``.

    Stated by the model (``stated_readout``), or, given the captured ``layers`` (maps
    ``[batch, (1,) seq, seq]`` per key), derived from ``get_relevance_tensor`` when its
    readout covers every attention position (as a model without a ``[CLS]`` token that reads
    out at one row does): the readout of the identity is then the weights themselves.
    ``None`` when neither holds; interpreters then multiply full matrices.

    Example:
        >>> weights = readout_weights(model, batch)   # {"diagnoses": [batch, 1 + seq]}
    """
    if capabilities(model).stated_readout:
        return model.get_readout_weights(**batch)
    if not layers:
        return None
    identities = {}
    for key, maps in layers.items():
        if not maps:
            return None
        batch_size, seq = maps[0].shape[0], maps[0].shape[-1]
        eye = torch.eye(seq, dtype=torch.float32, device=maps[0].device)
        identities[key] = eye.expand(batch_size, seq, seq)
    rows = model.get_relevance_tensor(identities, **batch)
    weights = {}
    for key, identity in identities.items():
        row = rows.get(key) if isinstance(rows, Mapping) else None
        if not isinstance(row, Tensor) or tuple(row.shape) != tuple(identity.shape[:2]):
            return None
        weights[key] = row
    return weights


def select_input_positions(
    model: Any, rows: Mapping[str, Tensor], batch: Mapping[str, Any]
) -> dict[str, Tensor]:
    """Readout rows ``[batch, seq]`` over attention positions -> ``[batch, n_inputs]``.

    The model's own selection when it states its readout; the identity for a derived readout
    (every attention position is an input position).
    """
    if capabilities(model).stated_readout:
        method = getattr(type(model), "select_input_positions", None)
        if method is None:  # a registered class: the interface's default, by linearity
            return AttentionInterpretable.select_input_positions(model, rows, **batch)
        return model.select_input_positions(rows, **batch)
    return dict(rows)


def mask_unscored_inputs(
    model: Any, scores: Mapping[str, Tensor], batch: Mapping[str, Any]
) -> dict[str, Tensor]:
    """``scores`` with exactly 0 where the model says an input position is not scored.

    A model may define ``get_scored_inputs(**data) -> {key: bool [batch, *positions]}``
    (the Hugging Face adapter: real tokens minus the tokenizer's ``special_tokens_mask``);
    every method's scores pass through here, so the same positions are 0 whatever the
    method. Models without it are returned as they are (their padding is already 0).

    Example:
        >>> raw = torch.ones(2, 5)                   # any method's scores, [batch, tokens]
        >>> scores = mask_unscored_inputs(encoder, {"input_ids": raw}, encoding)
        >>> scores["input_ids"]                      # [CLS], [SEP] and padding: exactly 0
        tensor([[0., 1., 1., 1., 0.],
                [0., 1., 0., 0., 0.]])
    """
    method = getattr(model, "get_scored_inputs", None)
    if method is None:
        return dict(scores)
    out = dict(scores)
    for key, scored in (method(**batch) or {}).items():
        if key not in out:
            continue
        values = out[key]
        keep = scored.to(device=values.device, dtype=torch.bool)
        keep = keep.reshape(keep.shape + (1,) * (values.dim() - keep.dim()))
        out[key] = values.masked_fill(~keep, 0.0)
    return out


# ------------------------------------------------------------------------- capture
def plain_tensors(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Copies of inference-mode tensors, which autograd may not save for backward."""

    def plain(value: Any) -> Any:
        if isinstance(value, Tensor) and value.is_inference():
            return value.clone()
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return tuple(plain(v) for v in value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in batch.items()}


@dataclass
class CapturedForward:
    """What :func:`capture_attention` yields: the model's outputs of the captured forward."""

    outputs: Any


@contextmanager
def capture_attention(
    model: AttentionInterpretable,
    batch: Mapping[str, Any],
    gradients: bool = False,
    head_fusion: str | None = None,
    keys_only: bool = False,
    gradient_fusion: GradientFusion | None = None,
    whole_maps: bool = False,
) -> Iterator[CapturedForward]:
    """Enable capture, run ``model(**batch)`` in eval mode, and always clean up.

    Inside the block, ``model.get_attention_layers()`` (read it with
    :func:`attention_layers`) returns the captured maps (and, with ``gradients=True``, their
    gradients once a backward pass has run). On exit - also on an exception - capture is
    disabled (every hook handle removed), what it kept is dropped where the model can
    (``clear_capture``), and the model is put back in the train/eval mode the caller had
    (every submodule's own flag). The whole block holds the model's lock (:func:`model_lock`):
    captures of one model in several threads take turns instead of overwriting each other's
    hooks and maps.

    A model without forward-only capture (``set_attention_hooks(enabled)`` alone) may
    register gradient hooks in its forward, which autograd refuses under ``torch.no_grad()``
    and ``torch.inference_mode()``. Its forward-only capture therefore runs with autograd on
    (the maps are read detached; nothing of the graph is kept once the block ends).

    Args:
        model: an :class:`AttentionInterpretable` (a :class:`GradientInterpretable` when
            ``gradients=True``).
        batch: keyword arguments of the model's forward.
        gradients: also capture attention gradients.
        head_fusion: forward-only: ask for maps already fused over heads (``[batch, 1, seq,
            seq]``), which models with ``fusion_at_capture`` store instead of every head's
            map; other models return per-head maps, to be fused by the caller.
        keys_only: forward-only: store each layer's queries and keys instead of its map
            (models with ``key_capture``; read them with ``model.get_attention_keys()``).
        gradient_fusion: with ``gradients=True``: ``fn(attention, gradient) -> [batch, seq,
            seq]`` applied to each layer as its gradient arrives (models with
            ``gradient_fusion``; differentiate ``model.get_gradient_anchors()`` and read
            ``model.get_fused_gradients()``). No per-head map or gradient outlives its layer's
            backward.
        whole_maps: with ``head_fusion``, on models with ``key_capture`` (which otherwise
            fuse block by block of query rows): compute each layer's map whole, as the plain
            forward does, so exact ties between weights stay exact.

    Example:
        >>> with capture_attention(model, batch) as captured:
        ...     layers = attention_layers(model)   # {key: [(attn, None), ...]}
    """
    caps = capabilities(model)
    if gradients and (head_fusion is not None or keys_only):
        raise ValueError(
            "head_fusion and keys_only at capture are for forward-only capture (gradients=False)"
        )
    if gradient_fusion is not None and not (gradients and caps.gradient_fusion):
        raise TypeError(
            f"gradient_fusion needs gradients=True and a model that fuses gradients at capture "
            f"(Capabilities.gradient_fusion); {type(model).__name__}: "
            f"gradient_fusion={caps.gradient_fusion}, gradients={gradients}"
        )
    if keys_only and not caps.key_capture:
        raise TypeError(
            f"{type(model).__name__} cannot capture queries and keys (Capabilities.key_capture); "
            "use the default capture of attention maps"
        )
    if gradients and not isinstance(model, GradientInterpretable):
        raise TypeError(
            f"{type(model).__name__} does not implement GradientInterpretable: "
            "gradient capture is not available"
        )
    hooks = cast(ForwardOnlyCapture, model)  # its keywords are used only where declared
    with eval_mode(model):
        try:
            if keys_only:
                hooks.set_attention_hooks(True, capture_gradients=False, keys_only=True)
            elif not caps.forward_only:
                model.set_attention_hooks(True)
            elif gradient_fusion is not None:
                cast(GradientFusionCapture, model).set_attention_hooks(
                    True, capture_gradients=True, gradient_fusion=gradient_fusion
                )
            elif head_fusion is not None and caps.fusion_at_capture:
                whole = {"whole_maps": True} if whole_maps and caps.key_capture else {}
                hooks.set_attention_hooks(
                    True, capture_gradients=False, head_fusion=head_fusion, **whole
                )
            else:
                hooks.set_attention_hooks(True, capture_gradients=gradients)
            if caps.forward_only:
                outputs = model(**batch)
            else:
                autograd = not gradients and not torch.is_grad_enabled()
                outputs = _legacy_forward(model, batch, autograd)
            yield CapturedForward(outputs=outputs)
        finally:
            model.set_attention_hooks(False)
            if caps.clear_capture:
                cast(ClearableCapture, model).clear_attention_capture()


@contextmanager
def lrp_rules(model: Any) -> Iterator[None]:
    """Attach the model's AttnLRP rules (``Capabilities.lrp_rules``) for the block, in eval
    mode under the model's lock, and always remove them (also on an exception).

    Inside, forwards compute the same values as without the rules, and ``input * gradient``
    after a backward pass is the relevance the rules propagate (see
    :mod:`ehrlens.models.lrp`).

    Raises:
        TypeError: the model does not declare ``lrp_rules``, naming it.

    Example:
        >>> with lrp_rules(model), torch.enable_grad():
        ...     logit = model(**batch)["logit"]     # backward: relevance, not gradients
    """
    if not capabilities(model).lrp_rules:
        raise TypeError(
            f"{type(model).__name__} has no AttnLRP rules (Capabilities.lrp_rules): the model "
            "must say how relevance passes through each of its layers, with set_lrp_rules("
            "enabled); ehrlens's Transformer and the Hugging Face adapter (BERT family) do"
        )
    rules = cast(LRPRulesModel, model)
    with eval_mode(model):
        try:
            rules.set_lrp_rules(True)
            yield
        finally:
            rules.set_lrp_rules(False)


#: PyTorch's words when a tensor hook is registered on a tensor that needs no gradient.
_REFUSED_HOOK = "cannot register a hook on a tensor that doesn't require gradient"


def _legacy_forward(model: Any, batch: Mapping[str, Any], autograd: bool) -> Any:
    """The forward of a model whose capture may register gradient hooks; with ``autograd``
    (the caller is under no_grad or inference mode) autograd is on for this forward only and
    the caller's tensors are copied. A refused hook becomes an error that says why."""
    try:
        if not autograd:
            return model(**batch)
        with torch.inference_mode(False), torch.enable_grad():
            return model(**plain_tensors(batch))
    except RuntimeError as error:
        if _REFUSED_HOOK not in str(error):  # e.g. a user's own hook that raised: as it is
            raise
        frozen = isinstance(model, nn.Module) and not any(
            p.requires_grad for p in model.parameters()
        )
        why = (
            "none of its parameters requires grad"
            if frozen
            else "its forward could not register them"
        )
        raise RuntimeError(
            f"{type(model).__name__} registers attention-gradient hooks in its forward "
            f"(set_attention_hooks(enabled) has no forward-only mode) and {why}: {error}. "
            "Give set_attention_hooks a capture_gradients=False mode that stores maps without "
            "hooks, or leave its parameters trainable while explaining"
        ) from error


__all__ = [
    "DEFAULT_PAD_ID",
    "AttentionHeads",
    "AttentionInterpretable",
    "Capabilities",
    "CapturedForward",
    "CheferInterpretable",
    "ClearableCapture",
    "EmbeddingLayers",
    "ForwardOnlyCapture",
    "GradientFusion",
    "GradientFusionCapture",
    "GradientInterpretable",
    "KeyCapture",
    "LRPRulesModel",
    "ModelDescription",
    "attention_layers",
    "capabilities",
    "capture_attention",
    "check_attention_layers",
    "describe",
    "eval_mode",
    "feature_layout",
    "feature_value",
    "input_view",
    "lrp_rules",
    "mask_unscored_inputs",
    "model_lock",
    "plain_tensors",
    "readout_weights",
    "select_input_positions",
]

"""Find what the Hugging Face adapter needs inside a ``transformers`` model, by what it is.

Attention modules are found by their class, not by the top-level model class, so a custom
``PreTrainedModel`` built around standard blocks (a CEHR-BERT-shaped model: its own
embeddings of codes, ages and visit segments around ``transformers``' ``BertEncoder``) is
explained without an adapter. A module is an attention module when

- its class (or a base class) is listed for the ``attentions`` output in the
  ``_can_record_outputs`` of a ``PreTrainedModel`` class of its own ``transformers`` modeling
  module (the standard attention classes: ``BertSelfAttention``, ``GPT2Attention``,
  ``LlamaAttention``, ...), or
- a ``PreTrainedModel`` in the model (the custom model itself) declares its class there,
  as ``transformers`` does: ``_can_record_outputs = {"attentions": MyAttention}`` or
  ``{"attentions": OutputRecorder(MyAttention, index=1, layer_name="attn")}``.

Either way the module must return its post-softmax map ``[batch, heads, tokens, tokens]`` at
that index of its output (1 by default, as every ``transformers`` attention class does).
Modules can also be listed explicitly (``HuggingFaceModel(model, attention_modules=[...])``).

Needs ``transformers``.

Example:
    >>> modules = find_attention_modules(bert)   # {attention module: index of its map}
    >>> len(modules) == bert.config.num_hidden_layers
    True
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import transformers
from torch import nn

__all__ = [
    "AttentionSpec",
    "find_attention_modules",
    "has_attention",
    "head_kind",
    "is_causal",
    "standard_attention_specs",
]

#: What a sequence-classification head, a language-model head or neither gives.
HEADS = ("sequence_classification", "causal_lm", None)


@dataclass(frozen=True)
class AttentionSpec:
    """One declared attention class: where its map is in its output, and (optionally) the
    name its modules carry in the model (GPT-2's ``attn``, not its ``crossattention``)."""

    target: type
    index: int = 1
    layer_name: str | None = None


def _specs_of(owner: type) -> list[AttentionSpec]:
    """The ``attentions`` entries of one ``PreTrainedModel`` class's ``_can_record_outputs``."""
    declared = getattr(owner, "_can_record_outputs", None)
    if not isinstance(declared, Mapping):
        return []
    specs = declared.get("attentions")
    if specs is None:
        return []
    found = []
    for spec in specs if isinstance(specs, (list, tuple)) else [specs]:
        target = spec if isinstance(spec, type) else getattr(spec, "target_class", None)
        if isinstance(target, type):
            index = 1 if isinstance(spec, type) else int(getattr(spec, "index", 1))
            found.append(AttentionSpec(target, index, getattr(spec, "layer_name", None)))
    return found


def standard_attention_specs(cls: type) -> list[AttentionSpec]:
    """The specs a ``transformers`` modeling module declares for ``cls`` or its bases.

    Reads the ``PreTrainedModel`` classes of the module that defines each class of
    ``cls.__mro__`` (``transformers.models.bert.modeling_bert`` for ``BertSelfAttention``).

    Example:
        >>> from transformers.models.llama.modeling_llama import LlamaAttention
        >>> standard_attention_specs(LlamaAttention)[0].index
        1
    """
    found: list[AttentionSpec] = []
    for base in cls.__mro__:
        module = sys.modules.get(base.__module__)
        if module is None or not base.__module__.startswith("transformers.models."):
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, transformers.PreTrainedModel):
                found += [s for s in _specs_of(value) if issubclass(cls, s.target)]
    return list(dict.fromkeys(found))


def _name_matches(layer_name: str | None, module_name: str) -> bool:
    return not layer_name or "." + layer_name.strip(".") + "." in f".{module_name}."


def find_attention_modules(model: nn.Module) -> dict[nn.Module, int]:
    """``{attention module: index of its map in the module's output}``, in module order
    (input side first), found by class as the module docstring says.

    Empty when no module qualifies (some architectures list no attention class): the adapter
    then runs the model with ``output_attentions=True``.
    """
    declared: list[AttentionSpec] = []
    for owner in model.modules():
        if isinstance(owner, transformers.PreTrainedModel):
            declared += _specs_of(type(owner))
    found: dict[nn.Module, int] = {}
    cache: dict[type, list[AttentionSpec]] = {}
    for module_name, module in model.named_modules():
        cls = type(module)
        if cls not in cache:
            own = [s for s in declared if issubclass(cls, s.target)]
            cache[cls] = own + standard_attention_specs(cls)
        for spec in cache[cls]:
            if _name_matches(spec.layer_name, module_name):
                found[module] = spec.index
                break
    return found


def has_attention(model: nn.Module) -> bool:
    """Whether some submodule's class is named as an attention class (``...Attention``,
    ``...Attn``): models that list no attention class but return ``output_attentions``."""
    return any(
        "attention" in type(m).__name__.lower() or "attn" in type(m).__name__.lower()
        for m in model.modules()
    )


def is_causal(model: nn.Module, modules: Iterable[nn.Module] = ()) -> bool:
    """Whether the model's self-attention is causal (a decoder): ``config.is_decoder``, or an
    attention module (of ``modules``, else any module) with ``is_causal=True``."""
    config = getattr(model, "config", None)
    if getattr(config, "is_decoder", False):
        return True
    candidates = list(modules) or list(model.modules())
    return any(getattr(module, "is_causal", False) is True for module in candidates)


def _mapping_names(*mappings: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for mapping in mappings:
        for value in mapping.values():
            names.update((value,) if isinstance(value, str) else value)
    return names


def head_kind(model: nn.Module) -> str | None:
    """``"sequence_classification"``, ``"causal_lm"`` (next-token logits ``[batch, tokens,
    vocab]``) or ``None`` (a base model), from the class name as ``transformers`` names its
    heads (a custom class ``...ForSequenceClassification`` counts too)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    name = type(model).__name__
    if name in _mapping_names(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES) or name.endswith(
        "ForSequenceClassification"
    ):
        return "sequence_classification"
    if name in _mapping_names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) or name.endswith("ForCausalLM"):
        return "causal_lm"
    return None

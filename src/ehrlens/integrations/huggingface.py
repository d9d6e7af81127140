"""Explain Hugging Face models, encoders and decoders, with ehrlens' methods (``ehrlens[hf]``).

:class:`HuggingFaceModel` wraps a ``transformers`` model as a
:class:`~ehrlens.interpret.GradientInterpretable` model, so every ehrlens method (rollout,
flow, raw attention, Chefer, AttnLRP, the gradient baselines) explains it with the same call
as ehrlens' own models, keyed by ``"input_ids"``::

    AttentionRollout(HuggingFaceModel(model)).attribute(input_ids=..., attention_mask=...)
    # -> {"input_ids": Tensor [batch, tokens]}

It takes BERT-family encoders, decoders (GPT-2, Llama, Qwen2, Mistral families: causal
attention, rotary positions, grouped-query attention, sliding windows) with a
sequence-classification head or a language-model head (the logit of a chosen next token),
and custom ``PreTrainedModel`` classes built around standard blocks (a CEHR-BERT-shaped model
with its own embeddings and extra inputs, passed through unchanged).
:class:`HuggingFaceEncoder` is the same adapter restricted to encoders.

How the adapter works:

- Attention modules are found by what they are (:mod:`.hf_modules`): the standard
  ``transformers`` attention classes, the classes a model declares in
  ``_can_record_outputs["attentions"]``, or the modules passed as ``attention_modules``.
  A forward hook on each reads the module's returned map, checks it, and stores it, fused
  over heads at once for forward-only methods (``[batch, 1, tokens, tokens]``), so the full
  ``output_attentions`` tuple of per-head maps is never held. Models with no attention module
  found are run with ``output_attentions=True`` instead (same numbers, more memory).
- The wrapped model is switched to the ``"ehrlens"`` attention implementation
  (:mod:`.hf_attention`; logged at INFO level on the ``ehrlens.integrations.huggingface``
  logger; the switch stays on the model): PyTorch's SDPA, the same numbers as
  ``attn_implementation="sdpa"``, when nothing listens (inference, training, the gradient
  baselines, AttnLRP); the model's own eager attention, which returns the maps, while maps
  are captured; and for rollout's key capture on encoders the fused kernel with each query
  row's log-sum-exp, so rollout forms no map. Models whose eager attention is not the plain
  ``softmax(q k^T * scaling + mask)``, and models with no attention module found, are
  switched to ``"eager"`` instead, as before.
- Gradients, when an interpreter asks for them, are captured by tensor hooks on the maps
  (post-softmax, in eval mode identical to the maps the values are mixed with); Chefer's
  ``clamp(grad * A)`` is fused over heads in that hook (``Capabilities.gradient_fusion``).
- The readout is the [CLS] position (0) for encoders, as BERT-family classification heads
  read out, and the last real token for decoders, as their heads and next-token predictions
  read out (left and right padding alike); ``readout="mean"``: the average over real tokens.
- Decoders get ``position_ids`` counted over real tokens (so a left-padded sample has the
  positions it has alone) and ``use_cache=False``, unless the batch gives them.
- Each captured forward checks the maps: ``[batch, heads, tokens, tokens]``, post-softmax
  (rows sum to 1), bidirectional for encoders and causal for decoders; architectures that
  break this (pooled, chunked or sparse attention, raw scores) are refused with an error
  naming the model class.
- Scores stay aligned with ``input_ids``: every real token, special tokens included, gets a
  score; padding (``attention_mask == 0``) gets exactly 0. Pass the tokenizer's
  ``special_tokens_mask`` in the batch to give special tokens 0 as well.
- :func:`token_scores_to_words` sums token scores into words with their character spans.

Importing this module needs ``transformers``; ``import ehrlens`` does not.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

try:
    import transformers
except ImportError as error:  # pragma: no cover - exercised by a test with transformers hidden
    raise ImportError(
        "ehrlens.integrations.huggingface needs the transformers library: pip install 'ehrlens[hf]'"
    ) from error

from ..core.interpretable import Capabilities, GradientFusion
from ..core.outputs import probabilities
from ..interpret.api import GradientInterpretable
from ..models.capture import AttentionSlot
from .hf_attention import ATTENTION_NAME, FusedLayerKeys, listening, supports_fused_attention
from .hf_inputs import check_hf_inputs, input_limits
from .hf_lrp import LRP_MODEL_TYPES, bert_lrp_rules, lrp_rules_for
from .hf_modules import find_attention_modules, has_attention, head_kind, is_causal
from .hf_outputs import OutputFn, cls_projection, last_hidden_state, pool, similarity_to
from .hf_words import WordScore, token_scores_to_words

__all__ = [
    "FEATURE_KEY",
    "LRP_MODEL_TYPES",
    "HuggingFaceEncoder",
    "HuggingFaceModel",
    "OutputFn",
    "WordScore",
    "bert_lrp_rules",
    "cls_projection",
    "last_hidden_state",
    "pool",
    "sentence_embedding",
    "similarity_to",
    "token_scores_to_words",
]

logger = logging.getLogger(__name__)

#: The feature key of the token positions in batches and explanations.
FEATURE_KEY = "input_ids"
#: What a tokenizer may return that the model's forward does not take; dropped before it.
TOKENIZER_ONLY_KEYS = frozenset(
    {"offset_mapping", "special_tokens_mask", "overflow_to_sample_mapping", "length"}
)
MODES = ("binary", "multiclass", "multilabel", "regression")
READOUTS = ("cls", "mean", "last")
_PROBLEM_TYPES = {"regression": "regression", "multi_label_classification": "multilabel"}


class HuggingFaceModel(nn.Module, GradientInterpretable):
    """A ``transformers`` encoder or decoder as an ehrlens
    :class:`~ehrlens.interpret.GradientInterpretable`.

    ``forward(input_ids, attention_mask=None, **inputs)`` runs the wrapped model and returns
    ``{"logit": [batch, outputs], "y_prob": [batch, outputs], "model_output": ...}`` (plus
    ``"loss"`` when the model computed one). The logit is

    - a sequence-classification head's ``logits``;
    - a language-model head's next-token logits at the readout token, ``[batch, vocab]``
      (``mode="multiclass"``: ``target_class_idx`` is the token id, or code id, whose logit
      is explained; ``None`` explains the predicted next token);
    - or what ``output_fn(model_outputs, batch)`` returns (``[batch]`` becomes
      ``[batch, 1]``).

    Further inputs (``token_type_ids``, or a custom model's ages, dates and visit segments)
    are passed to the model unchanged; tokenizer-only keys (``offset_mapping``,
    ``special_tokens_mask``, ...) are dropped, so ``wrapped(**tokenizer(...))`` works.

    Explanations are keyed by ``"input_ids"`` and shaped ``[batch, tokens]``: all real tokens
    are scored, padding gets exactly 0, and so do special tokens when the batch carries the
    tokenizer's ``special_tokens_mask``.

    Construction switches the model, in place, to the ``"ehrlens"`` attention (SDPA unless an
    explanation needs maps; see the module docstring), or to eager attention where that does
    not apply, and logs it at INFO level.

    Args:
        model: a ``transformers.PreTrainedModel``: an encoder (BERT family), a decoder (GPT-2,
            Llama, Qwen2, Mistral families), with a sequence-classification head, a
            language-model head (``...ForCausalLM``), or none (then give ``output_fn``); or a
            custom ``PreTrainedModel`` whose attention modules are standard ``transformers``
            classes or declared (see :mod:`ehrlens.integrations.hf_modules`).
        output_fn: ``output_fn(model_outputs, batch) -> Tensor [batch] or [batch, outputs]``,
            the scalar(s) to explain; required without a head. See :func:`similarity_to` and
            :func:`cls_projection`.
        mode: how logits are explained (as ehrlens models' ``mode``): ``"binary"``,
            ``"multiclass"``, ``"multilabel"`` or ``"regression"``. Default: from the head's
            ``config.problem_type`` and ``num_labels``; ``"multiclass"`` for a language-model
            head; ``"regression"`` (explain output 0) with ``output_fn``.
        readout: attention positions the explained output reads: ``"cls"`` (position 0;
            the default for encoders), ``"last"`` (the last real token; the default for
            decoders) or ``"mean"`` (uniform over real tokens, ``attention_mask``).
        attention_modules: the attention modules, input side first, when they are neither
            standard classes nor declared: a list (each returns its map at output index 1)
            or ``{module: index of its map in the module's output}``.

    Attributes:
        model: the wrapped ``transformers`` model (``"ehrlens"`` or eager attention).
        fused_attention: whether the model runs the ``"ehrlens"`` attention.
        feature_keys: ``["input_ids"]``.
        mode: the explained mode (see ``mode`` above).
        causal: whether the model's self-attention is causal (a decoder).
        pad_ids: ``{"input_ids": config.pad_token_id}``, the padding id of the vocabulary.

    Raises:
        TypeError: ``model`` is not a ``transformers`` model.
        ValueError: an encoder-decoder model; no head and no ``output_fn``; a readout that
            does not fit (``"cls"`` for a decoder, anything but ``"last"`` for next-token
            logits); or (at the first explanation) maps that are not post-softmax ``[batch,
            heads, tokens, tokens]`` self-attention.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
        ...                      num_hidden_layers=2, num_attention_heads=4,
        ...                      num_key_value_heads=2)
        >>> wrapped = HuggingFaceModel(LlamaForCausalLM(config))
        >>> batch = {"input_ids": torch.tensor([[0, 5, 6, 7]]),
        ...          "attention_mask": torch.tensor([[0, 1, 1, 1]])}      # left padding
        >>> with torch.inference_mode():
        ...     scores = AttentionRollout(wrapped).attribute(target_class_idx=9, **batch)
        >>> scores["input_ids"].shape, float(scores["input_ids"][0, 0])
        (torch.Size([1, 4]), 0.0)
    """

    interpret_capabilities = Capabilities(
        forward_only=True,
        fusion_at_capture=True,
        key_capture=True,
        stated_readout=True,
        embedding_layers=True,
        clear_capture=True,
        gradient_fusion=True,
        lrp_rules=True,
    )

    def __init__(
        self,
        model: Any,
        output_fn: OutputFn | None = None,
        mode: str | None = None,
        readout: str | None = None,
        attention_modules: Sequence[nn.Module] | Mapping[nn.Module, int] | None = None,
    ) -> None:
        super().__init__()
        check_model(model)
        name = type(model).__name__
        self.head = head_kind(model)
        if output_fn is None and self.head is None:
            raise ValueError(
                f"{name} has no sequence-classification head (nor a language-model head), so "
                "there is no logit to explain: pass output_fn=... (e.g. "
                "similarity_to(reference) or cls_projection(weight)), or load "
                "AutoModelForSequenceClassification / AutoModelForCausalLM"
            )
        if output_fn is not None and not callable(output_fn):
            raise TypeError(
                "output_fn must be callable as output_fn(model_outputs, batch) -> Tensor, got "
                f"{type(output_fn).__name__}"
            )
        found = declared_attention_modules(model, attention_modules)
        if not found and not has_attention(model):
            raise ValueError(
                f"{name} has no attention modules (no submodule is an attention class): "
                "ehrlens explains attention-based models; state-space and recurrent "
                "architectures (Mamba, RWKV, ...) are not supported. If it has attention "
                "modules under other names, pass attention_modules=[...]"
            )
        self.causal = is_causal(model, found) or self.head == "causal_lm"
        if readout is None:
            readout = "last" if self.causal else "cls"
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if self.causal and readout == "cls":
            raise ValueError(
                f"{name} has causal self-attention: its first token sees only itself, so "
                "readout='cls' would explain nothing; use readout='last' (the default for "
                "decoders) or 'mean'"
            )
        if output_fn is None and self.head == "causal_lm" and readout != "last":
            raise ValueError(
                f"{name} predicts the next token at the last real token: readout must be "
                f"'last' for its next-token logits, got {readout!r}"
            )
        self.model = model
        self.output_fn = output_fn
        self.mode = resolve_mode(model, output_fn, mode, self.head)
        self.readout = readout
        self.feature_keys = [FEATURE_KEY]
        self.pad_ids: dict[str, int | None] = {
            FEATURE_KEY: getattr(model.config, "pad_token_id", None)
        }
        #: Whether the model runs the ``"ehrlens"`` attention (SDPA unless a map is needed).
        self.fused_attention = use_attention_for(model, found)
        self._capture = _AttentionStore()
        self._attention_modules = found
        self._forward_parameters = forward_parameters(model)
        self._input_limits = input_limits(model)

    @property
    def fused_weighted_rows(self) -> bool:
        """Whether rollout's key capture keeps the fused kernel's queries, keys and row
        log-sum-exp (:class:`~.hf_attention.FusedLayerKeys`): an encoder under the
        ``"ehrlens"`` attention. Rollout then forms no map (see :class:`AttentionRollout`)."""
        return self.fused_attention and not self.causal and bool(self._attention_modules)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ forward
    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, **inputs: Any
    ) -> dict[str, Any]:
        """Run the model; ``{"logit": [batch, outputs], "y_prob": ..., "model_output": ...}``.

        Args:
            input_ids: ``[batch, tokens]`` token ids.
            attention_mask: ``[batch, tokens]``, 1 at real tokens, 0 at padding.
            inputs: further model inputs (``token_type_ids``, ...); tokenizer-only keys are
                dropped.
        """
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
            raise ValueError(
                f"feature '{FEATURE_KEY}': expected token ids [batch, tokens], got {got}"
            )
        check_hf_inputs(
            self.model, input_ids, {**inputs, "attention_mask": attention_mask}, self._input_limits
        )
        model_inputs = {k: v for k, v in inputs.items() if k not in TOKENIZER_ONLY_KEYS}
        if attention_mask is not None:
            model_inputs["attention_mask"] = attention_mask
        if self.causal:
            self._decoder_inputs(input_ids, attention_mask, model_inputs)
        store = self._capture
        capturing = store.records_this_thread()
        if capturing and self._attention_modules:
            outputs = self._hooked_forward(input_ids, attention_mask, model_inputs)
        elif capturing:
            model_inputs["output_attentions"] = True
            outputs = self.model(input_ids=input_ids, **model_inputs)
            store.record(
                checked_attentions(
                    self.model, outputs, input_ids, attention_mask, causal=self.causal
                )
            )
        else:  # nothing listens (AttnLRP's rules included): SDPA under "ehrlens" attention
            outputs = self.model(input_ids=input_ids, **model_inputs)
        batch = {FEATURE_KEY: input_ids, "attention_mask": attention_mask, **inputs}
        logit = self._logit(outputs, batch)
        out: dict[str, Any] = {
            "logit": logit,
            "y_prob": probabilities(logit, self.mode),
            "model_output": outputs,
        }
        loss = getattr(outputs, "loss", None)
        if loss is not None:
            out["loss"] = loss
        return out

    def _decoder_inputs(
        self, input_ids: Tensor, attention_mask: Tensor | None, model_inputs: dict[str, Any]
    ) -> None:
        """Positions counted over real tokens and no cache, where the model takes them and
        the batch does not give them; for a classification head, check that it reads the
        token the explanation reads out."""
        takes = self._forward_parameters
        if attention_mask is not None and "position_ids" not in model_inputs:
            if takes is None or "position_ids" in takes:
                positions = attention_mask.long().cumsum(dim=1) - 1
                model_inputs["position_ids"] = positions.clamp(min=0)
        if "use_cache" not in model_inputs and (takes is None or "use_cache" in takes):
            model_inputs["use_cache"] = False
        if self.head == "sequence_classification" and self.output_fn is None:
            check_head_position(self.model, input_ids, attention_mask, self.readout)

    def _hooked_forward(
        self, input_ids: Tensor, attention_mask: Tensor | None, model_inputs: dict[str, Any]
    ) -> Any:
        """Run the model with a forward hook on each attention module: every layer's map is
        checked and stored (fused, where asked) as the layer returns it."""
        name = type(self.model).__name__
        real = real_tokens({FEATURE_KEY: input_ids, "attention_mask": attention_mask})
        store = self._capture
        store.begin()

        thread = threading.get_ident()
        mode = "keys" if store.keys_only else "maps"
        with listening(mode, self._attention_modules) as state:

            def on_attention(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
                if threading.get_ident() != thread:  # another thread's forward of the model
                    return
                if store.keys_only and module in state.fused:  # the fused call kept its keys
                    store.record_call(state.fused.pop(module))
                    return
                index = self._attention_modules[module]
                attention = output[index] if isinstance(output, (tuple, list)) else None
                if attention is None:
                    store.missing = True
                    return
                layer = store.layers_seen
                check_attention_map(name, layer, attention, real, causal=self.causal)
                if store.keys_only:
                    store.record_call(CapturedLayerCall.of(module, args, kwargs, index))
                    return
                anchor = args[0] if args else kwargs.get("hidden_states")
                store.record_layer(attention, anchor if isinstance(anchor, Tensor) else None)

            handles: list[RemovableHandle] = [
                module.register_forward_hook(on_attention, with_kwargs=True)
                for module in self._attention_modules
            ]
            try:
                outputs = self.model(input_ids=input_ids, **model_inputs)
            finally:
                for handle in handles:
                    handle.remove()
        if store.missing or store.layers_seen == 0:
            store.clear_slots()
            raise TypeError(
                f"{name} returned no attention maps from its attention modules (attention "
                f"implementation {getattr(self.model.config, '_attn_implementation', None)!r}); "
                "ehrlens needs a model that exposes its self-attention maps "
                "[batch, heads, tokens, tokens]"
            )
        store.end()
        return outputs

    def _logit(self, outputs: Any, batch: Mapping[str, Any]) -> Tensor:
        batch_size = batch[FEATURE_KEY].shape[0]
        value: Any
        if self.output_fn is not None:
            value = self.output_fn(outputs, batch)
            source = "output_fn"
        else:
            value = getattr(outputs, "logits", None)
            source = f"{type(self.model).__name__}.logits"
            if self.head == "causal_lm" and isinstance(value, Tensor) and value.dim() == 3:
                last = last_real_positions(batch)  # next-token logits at the last real token
                value = value[torch.arange(batch_size, device=value.device), last.to(value.device)]
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{source} must be a tensor [batch] or [batch, outputs], got {type(value).__name__}"
            )
        if value.dim() == 1:
            value = value[:, None]
        if value.dim() != 2 or value.shape[0] != batch_size:
            raise ValueError(
                f"{source} must be [batch] or [batch, outputs] with batch={batch_size}, got "
                f"shape {tuple(value.shape)} (token-level outputs need an output_fn that "
                "reduces them to one value per sample)"
            )
        return value

    # ------------------------------------------------------------------ capture
    def set_attention_hooks(
        self,
        enabled: bool,
        capture_gradients: bool = True,
        head_fusion: str | None = None,
        gradient_fusion: GradientFusion | None = None,
        keys_only: bool = False,
    ) -> None:
        """Start (or stop) storing every layer's attention map [and its gradient].

        While enabled, each forward stores every layer's map ``[batch, heads, tokens,
        tokens]`` as its attention module returns it (detached unless ``capture_gradients``;
        with it, a tensor hook stores each map's gradient when a backward pass reaches it).
        Each captured forward replaces what the previous one stored. Disabling stops capture
        and keeps the last forward's maps (and gradients, also those of a later backward)
        until the next enabled forward or :meth:`clear_attention_capture`.

        Args:
            enabled: start (True) or stop (False) capturing.
            capture_gradients: keep maps in the graph and store their gradients.
            head_fusion: forward-only: store each map fused over heads (``"mean"``,
                ``"max"``, ``"min"``) as ``[batch, 1, tokens, tokens]``, as it is produced.
            gradient_fusion: with ``capture_gradients``: ``fn(attention, gradient) ->
                [batch, tokens, tokens]`` in the backward (see
                :class:`~ehrlens.models.capture.AttentionSlot`); read
                :meth:`get_fused_gradients` after differentiating
                :meth:`get_gradient_anchors`.
            keys_only: forward-only: store no map. Under the ``"ehrlens"`` attention, a
                layer whose mask only pads keys keeps the fused kernel's queries, keys and
                row log-sum-exp (:class:`~.hf_attention.FusedLayerKeys`: rollout carries its
                rows through by one fused call); other layers keep the attention module's
                call (its input hidden states and keyword arguments, ``[batch, tokens,
                hidden]``), from which one layer's map is recomputed at a time
                (:meth:`get_attention_keys`; rollout's low-memory path).
        """
        if enabled:
            if (head_fusion is not None or keys_only) and capture_gradients:
                raise ValueError(
                    "head_fusion and keys_only at capture are for forward-only capture"
                )
            if keys_only and not self._attention_modules:
                raise TypeError(
                    f"{type(self.model).__name__} lists no attention modules, so its layers "
                    "cannot be recomputed (keys_only); use the default capture of maps"
                )
            if gradient_fusion is not None and not capture_gradients:
                raise ValueError("gradient_fusion at capture needs capture_gradients=True")
            self._capture.enable(bool(capture_gradients), head_fusion, gradient_fusion, keys_only)
        else:
            self._capture.enabled = False

    def clear_attention_capture(self) -> None:
        """Drop the maps and gradient hooks the last capture kept."""
        self._capture.clear()

    def _captured_slots(self) -> list[AttentionSlot]:
        store = self._capture
        if not store.used:
            raise RuntimeError(
                "attention capture was never enabled: call set_attention_hooks(True) and run a "
                "forward"
            )
        if not store.slots and not store.enabled:
            raise RuntimeError(
                "attention capture is off and its last result was cleared: call "
                "set_attention_hooks(True) and run a forward"
            )
        if not store.slots:
            raise RuntimeError(
                "no attention captured yet: run a forward after set_attention_hooks(True)"
            )
        return store.slots

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        """``{"input_ids": [(attn_map, attn_grad), ...]}``, one pair per layer, input first.

        Maps are ``[batch, heads, tokens, tokens]`` (``[batch, 1, tokens, tokens]`` with
        ``head_fusion``); ``attn_grad`` (same shape) is ``None`` until a backward pass reaches
        the map, or when gradients are not captured.
        """
        slots = self._captured_slots()
        if any(slot.attention is None for slot in slots):
            if any(slot.fused_gradient is not None for slot in slots):
                raise RuntimeError(
                    "the maps were fused with their gradients in the backward and dropped "
                    "(gradient_fusion); read get_fused_gradients()"
                )
            raise RuntimeError(
                "no attention captured yet: run a forward after set_attention_hooks(True)"
            )
        return {FEATURE_KEY: [(s.attention, s.gradient) for s in slots if s.attention is not None]}

    def get_attention_keys(self) -> dict[str, list[CapturedLayerCall | FusedLayerKeys]]:
        """``{"input_ids": [one per layer]}`` (``keys_only`` capture): what recomputes each
        layer's map ``[batch, heads, tokens, tokens]``, input side first: the queries, keys
        and log-sum-exp of the fused kernel (:class:`~.hf_attention.FusedLayerKeys`, where
        the model runs the ``"ehrlens"`` attention and the layer only pads keys), else the
        attention module's call (:class:`CapturedLayerCall`)."""
        store = self._capture
        if not store.calls:
            raise RuntimeError(
                "no attention module calls captured: call set_attention_hooks(True, "
                "capture_gradients=False, keys_only=True) and run a forward"
            )
        return {FEATURE_KEY: list(store.calls)}

    def get_gradient_anchors(self) -> list[Tensor]:
        """What to differentiate so the backward reaches every captured map
        (``gradient_fusion``): each attention module's input ``[batch, tokens, hidden]``, or
        the map itself where that input needs no gradient."""
        return [s.anchor for s in self._captured_slots() if s.anchor is not None]

    def get_fused_gradients(self) -> dict[str, list[Tensor]]:
        """``{"input_ids": [gradient_fusion(map, gradient) per layer]}``, ``[batch, tokens,
        tokens]``, input side first; zeros for a map no gradient reached."""
        return {FEATURE_KEY: [s.fused_or_zeros() for s in self._captured_slots()]}

    # ------------------------------------------------------------------ readout
    def get_readout_weights(self, **data: Any) -> dict[str, Tensor]:
        """Readout weights ``[batch, tokens]``: one-hot at [CLS] (position 0) with
        ``readout="cls"``, at the last real token with ``"last"``, ``attention_mask /
        n_real_tokens`` with ``"mean"``."""
        input_ids = data[FEATURE_KEY]
        if self.readout == "mean":
            real = real_tokens(data).to(torch.get_default_dtype())
            weights = real / real.sum(dim=1, keepdim=True).clamp(min=1.0)
        else:
            weights = torch.zeros(input_ids.shape, device=input_ids.device)
            if self.readout == "last":
                rows = torch.arange(input_ids.shape[0], device=input_ids.device)
                weights[rows, last_real_positions(data).to(input_ids.device)] = 1.0
            else:
                weights[:, 0] = 1.0
        return {FEATURE_KEY: weights}

    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]:
        """The readout row of each ``[batch, tokens, tokens]`` matrix: ``[batch, tokens]``.

        ``readout="cls"``: the [CLS] row; ``"last"``: the last real token's row; ``"mean"``:
        the average of the real tokens' rows.
        Every token keeps its position; padding (and special tokens, when the batch has
        ``special_tokens_mask``) get exactly 0.
        """
        weights = self.get_readout_weights(**data)[FEATURE_KEY]
        rows = {
            key: torch.bmm(weights.to(r.device, r.dtype)[:, None, :], r)[:, 0]
            for key, r in R.items()
        }
        return self.select_input_positions(rows, **data)

    def select_input_positions(
        self, relevance: Mapping[str, Tensor], **data: Any
    ) -> dict[str, Tensor]:
        """Rows ``[batch, tokens]`` over attention positions, with non-scored positions 0."""
        scored = scored_positions(data)
        return {key: row.masked_fill(~scored.to(row.device), 0.0) for key, row in relevance.items()}

    def get_scored_inputs(self, **data: Any) -> dict[str, Tensor]:
        """``{"input_ids": bool [batch, tokens]}``: the positions every method scores (real
        tokens, minus special tokens when the batch has ``special_tokens_mask``); the others
        get exactly 0 from every method, gradient-based ones included."""
        return {FEATURE_KEY: scored_positions(data)}

    def set_lrp_rules(self, enabled: bool) -> None:
        """Attach (``True``) or remove (``False``) the AttnLRP rules on the wrapped model.

        ``config.model_type`` in :data:`LRP_MODEL_TYPES` (BERT family, GPT-2, Llama, Qwen2,
        Mistral; a custom model built on BERT's layers counts as BERT): the identity rule on
        every layer norm, RMS norm and activation module, the uniform rule on the attention
        products (query/key projections' gradient x 1/4, value x 1/2) and on the gated MLP's
        product (x 1/2 each), LRP-0 elsewhere, rotary embeddings included (see
        :mod:`ehrlens.integrations.hf_lrp`). Forward values are unchanged. An ``output_fn``
        is differentiated as it is (a linear one such as :func:`cls_projection` keeps
        conservation; a cosine similarity does not).

        Raises:
            TypeError: another architecture, or an activation that is a plain function (no
                module to attach the identity rule to), naming the model class.
        """
        current = self.__dict__.pop("_lrp_rules_attached", None)
        if current is not None:
            current.remove()
        if enabled:
            self.__dict__["_lrp_rules_attached"] = lrp_rules_for(self.model)

    def get_embedding_layers(self) -> dict[str, nn.Module]:
        """``{"input_ids": word embedding module}``, output ``[batch, tokens, hidden]``.

        For the gradient baselines (:class:`~ehrlens.interpret.InputXGradient`, ...);
        :class:`~ehrlens.interpret.IntegratedGradients` uses token id 0 as its baseline (BERT's
        [PAD]).
        """
        return {FEATURE_KEY: self.model.get_input_embeddings()}


class HuggingFaceEncoder(HuggingFaceModel):
    """:class:`HuggingFaceModel` for encoders only (BERT family): decoders and
    encoder-decoders are refused, and the readout is [CLS] (position 0) by default.

    Args:
        model: a ``transformers.PreTrainedModel`` encoder (BERT, RoBERTa, DistilBERT, ELECTRA,
            ...): a base model (``AutoModel``, with ``output_fn``) or one with a
            sequence-classification head (``AutoModelForSequenceClassification``).
        output_fn / mode / attention_modules: as for :class:`HuggingFaceModel`.
        readout: ``"cls"`` (one-hot at position 0), ``"mean"`` (uniform over real tokens,
            matching a mean-pooled output such as ``similarity_to(reference,
            pooling="mean")``) or ``"last"``.

    Raises:
        ValueError: the model is a decoder or encoder-decoder (use :class:`HuggingFaceModel`
            for decoders), or as :class:`HuggingFaceModel`.

    Example:
        >>> from transformers import AutoModelForSequenceClassification
        >>> model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        >>> encoder = HuggingFaceEncoder(model)
        >>> batch = tokenizer(["chest pain", "no complaints"], padding=True, return_tensors="pt")
        >>> with torch.inference_mode():
        ...     scores = AttentionRollout(encoder).attribute(**batch)  # {"input_ids": [2, t]}
        >>> scores["input_ids"][1, -1]      # "no complaints" is one token shorter: padding
        tensor(0.)
    """

    def __init__(
        self,
        model: Any,
        output_fn: OutputFn | None = None,
        mode: str | None = None,
        readout: str = "cls",
        attention_modules: Sequence[nn.Module] | Mapping[nn.Module, int] | None = None,
    ) -> None:
        check_encoder(model)
        super().__init__(model, output_fn, mode, readout, attention_modules)


def _detached(value: Any) -> Any:
    """``value`` with every tensor in it (tuples, lists, dicts) detached."""
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


class CapturedLayerCall:
    """One attention module's call in a captured forward: enough to recompute its map.

    Holds the module, its (detached) positional and keyword arguments, and where the map is
    in its output. :meth:`weights` calls the module again (no gradients) and returns the map,
    the same as the forward's: encoders in eval mode are deterministic. Only the layer's
    inputs ``[batch, tokens, hidden]`` are kept, not its ``[batch, heads, tokens, tokens]``
    map; the masks and position embeddings are the forward's own objects, shared by layers.

    Example:
        >>> encoder.set_attention_hooks(True, capture_gradients=False, keys_only=True)
        >>> _ = encoder(**encoding)
        >>> layer = encoder.get_attention_keys()["input_ids"][0]
        >>> layer.weights().shape           # [batch, heads, tokens, tokens]
        torch.Size([2, 2, 5, 5])
        >>> encoder.set_attention_hooks(False)
    """

    def __init__(self, module: nn.Module, args: tuple, kwargs: dict, index: int) -> None:
        self.module, self.args, self.kwargs, self.index = module, args, kwargs, index

    @classmethod
    def of(cls, module: nn.Module, args: Any, kwargs: Any, index: int) -> CapturedLayerCall:
        return cls(module, _detached(tuple(args)), _detached(dict(kwargs)), index)

    @property
    def _hidden(self) -> Tensor:
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    @property
    def seq_len(self) -> int:
        return int(self._hidden.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the layer's input hidden states."""
        return self._hidden.dtype

    def block_rows(self, requested: int | None = None) -> int:
        """All query rows, whatever is ``requested``: the module computes its map whole, so
        smaller blocks would recompute the whole layer once per block."""
        return self.seq_len

    def weights(self, rows: slice = slice(None)) -> Tensor:
        """The layer's map ``[batch, heads, len(rows), tokens]``, recomputed."""
        with torch.no_grad(), listening("maps"):  # the "ehrlens" attention returns its map
            output = self.module(*self.args, **self.kwargs)
        return output[self.index][:, :, rows]


class _AttentionStore:
    """The adapter's capture state: one :class:`~ehrlens.models.capture.AttentionSlot` per
    layer (the store every ehrlens model uses), created when capture is enabled and fed with
    the maps of each captured forward."""

    def __init__(self) -> None:
        self.enabled = False
        self.gradients = False
        self.head_fusion: str | None = None
        self.gradient_fusion: GradientFusion | None = None
        self.used = False
        self.slots: list[AttentionSlot] | None = None
        self.thread = threading.get_ident()
        self.layers_seen = 0
        self.missing = False
        self.keys_only = False
        self.calls: list[CapturedLayerCall | FusedLayerKeys] = []

    def enable(
        self,
        gradients: bool,
        head_fusion: str | None = None,
        gradient_fusion: GradientFusion | None = None,
        keys_only: bool = False,
    ) -> None:
        self.clear()
        self.enabled, self.gradients, self.used = True, gradients, True
        self.head_fusion, self.gradient_fusion = head_fusion, gradient_fusion
        self.keys_only = keys_only
        self.thread = threading.get_ident()

    def _new_slot(self) -> AttentionSlot:
        return AttentionSlot(self.gradients, self.head_fusion, self.gradient_fusion)

    def begin(self) -> None:
        """A hooked forward starts: its layers replace the slots in call order."""
        self.clear_slots()
        self.slots = None if self.keys_only else []
        self.layers_seen = 0
        self.missing = False

    def record_call(self, call: CapturedLayerCall | FusedLayerKeys) -> None:
        self.calls.append(call)
        self.layers_seen += 1

    def record_layer(self, attention: Tensor, anchor: Tensor | None) -> None:
        slot = self._new_slot()
        slot.record(attention, anchor=anchor)
        assert self.slots is not None
        self.slots.append(slot)
        self.layers_seen += 1

    def end(self) -> None:
        self.layers_seen = 0

    def records_this_thread(self) -> bool:
        """Only forwards of the thread that enabled capture are recorded."""
        return self.enabled and threading.get_ident() == self.thread

    def record(self, maps: list[Tensor]) -> None:
        """Store the maps of an ``output_attentions`` forward (models without hooks)."""
        if self.slots is None or len(self.slots) != len(maps):
            self.clear_slots()
            self.slots = [self._new_slot() for _ in maps]
        for slot, attention in zip(self.slots, maps, strict=True):
            slot.record(attention)

    def clear_slots(self) -> None:
        for slot in self.slots or []:
            slot.clear()
        self.slots = None
        self.calls = []

    def clear(self) -> None:
        self.clear_slots()
        self.enabled = False


# ---------------------------------------------------------------------- checks and helpers
def check_model(model: Any) -> None:
    """Refuse what no adapter here explains, naming the model class.

    Raises:
        TypeError: not a ``transformers.PreTrainedModel``.
        ValueError: an encoder-decoder model (its cross-attention mixes two sequences).
    """
    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(
            "HuggingFaceModel wraps a transformers PreTrainedModel (e.g. "
            f"AutoModel.from_pretrained(...)); got {type(model).__name__}"
        )
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(
            f"{type(model).__name__} is an encoder-decoder model; ehrlens explains "
            "self-attention encoders read out at [CLS] (BERT family) and decoder-only models "
            "read out at the last token (GPT-2, Llama, Qwen2, Mistral), not cross-attention"
        )


def check_encoder(model: Any) -> None:
    """Refuse what :class:`HuggingFaceEncoder` cannot explain, naming the model class.

    Raises:
        TypeError: not a ``transformers.PreTrainedModel``.
        ValueError: an encoder-decoder, or a decoder (causal self-attention).
    """
    check_model(model)
    name = type(model).__name__
    if is_causal(model):
        raise ValueError(
            f"{name} has causal (decoder) self-attention; HuggingFaceEncoder explains encoders "
            "with bidirectional self-attention read out at [CLS] (BERT family), not "
            "decoder-only models: wrap it with HuggingFaceModel"
        )


def has_classification_head(model: Any) -> bool:
    """Whether ``model`` is a sequence-classification model (its ``logits`` are explained)."""
    return head_kind(model) == "sequence_classification"


def declared_attention_modules(
    model: Any, given: Sequence[nn.Module] | Mapping[nn.Module, int] | None
) -> dict[nn.Module, int]:
    """``{attention module: index of its map}``: ``given`` (checked to be submodules of
    ``model``) or found by class (:func:`~.hf_modules.find_attention_modules`)."""
    if given is None:
        return find_attention_modules(model)
    pairs = dict(given) if isinstance(given, Mapping) else {module: 1 for module in given}
    inside = {id(m) for m in model.modules()}
    for module in pairs:
        if not isinstance(module, nn.Module) or id(module) not in inside:
            raise ValueError(
                f"attention_modules must be submodules of {type(model).__name__}; got "
                f"{type(module).__name__}"
            )
    if not pairs:
        raise ValueError("attention_modules is empty: list the model's attention modules")
    return pairs


def forward_parameters(model: Any) -> frozenset[str] | None:
    """The keyword names ``model.forward`` takes, or ``None`` when it takes any
    (``**kwargs``) or has no readable signature."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    return frozenset(
        name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD
    )


def last_real_positions(data: Mapping[str, Any]) -> Tensor:
    """``long [batch]``: the position of each sample's last real token (``attention_mask``),
    left or right padding alike; the last position without a mask.

    Raises:
        ValueError: a sample with no real token, naming its row.
    """
    real = real_tokens(data)
    empty = torch.nonzero(~real.any(dim=1)).flatten().tolist()
    if empty:
        raise ValueError(
            f"row {empty[0]} of {FEATURE_KEY} has no real token (attention_mask is all 0): "
            "there is no last token to read out"
        )
    positions = torch.arange(real.shape[1], device=real.device)
    return (positions * real).argmax(dim=1)


def check_head_position(
    model: Any, input_ids: Tensor, attention_mask: Tensor | None, readout: str
) -> None:
    """A decoder's classification head reads the last token that is not ``pad_token_id``
    (``transformers``' rule); refuse a batch where that is not the last real token of
    ``attention_mask``, which the explanation reads out, naming the first such row."""
    if readout != "last":
        return
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    pad = getattr(text_config, "pad_token_id", None)
    tokens = input_ids.shape[1]
    checked = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    if pad is None:
        head = torch.full((input_ids.shape[0],), tokens - 1, device=input_ids.device)
        rule = "the last position (config.pad_token_id is None)"
    else:
        positions = torch.arange(tokens, device=input_ids.device)
        head = (positions * (input_ids != pad)).argmax(dim=1)
        rule = f"the last token that is not pad_token_id={pad}"
        # rows of pad ids only (e.g. integrated gradients' baseline) read nothing to compare
        checked = (input_ids != pad).any(dim=1)
    last = last_real_positions({FEATURE_KEY: input_ids, "attention_mask": attention_mask})
    differ = torch.nonzero((head != last.to(head.device)) & checked).flatten().tolist()
    if differ:
        row = differ[0]
        raise ValueError(
            f"{type(model).__name__}: row {row}: the classification head reads token "
            f"{int(head[row])} ({rule}) but the last real token of attention_mask is "
            f"{int(last[row])}; the explanation would read out another token than the "
            "prediction. Pad with config.pad_token_id and mark padding in attention_mask"
        )


def resolve_mode(
    model: Any, output_fn: OutputFn | None, mode: str | None, head: str | None = None
) -> str:
    """The ehrlens ``mode`` explained: given, or from the head's config (see the class)."""
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return mode
    if output_fn is not None:
        return "regression"
    if head == "causal_lm":
        return "multiclass"
    problem_type = getattr(model.config, "problem_type", None)
    if problem_type in _PROBLEM_TYPES:
        return _PROBLEM_TYPES[problem_type]
    return "multiclass" if int(getattr(model.config, "num_labels", 1)) > 1 else "binary"


def use_attention_for(model: Any, modules: Mapping[nn.Module, int]) -> bool:
    """Switch ``model`` (in place) to the ``"ehrlens"`` attention where it applies
    (:func:`~.hf_attention.supports_fused_attention`; returns True), else to eager attention
    (False); logged at INFO level."""
    if supports_fused_attention(model, modules):
        current = getattr(model.config, "_attn_implementation", None)
        if current != ATTENTION_NAME:
            model.set_attn_implementation(ATTENTION_NAME)
        if getattr(model.config, "_attn_implementation", None) == ATTENTION_NAME:
            if current != ATTENTION_NAME:
                logger.info(
                    "%s: attention implementation switched from %r to %r: PyTorch's SDPA "
                    "while no explanation listens, eager attention where its maps are "
                    "needed, the fused kernel for rollout's key capture",
                    type(model).__name__,
                    current,
                    ATTENTION_NAME,
                )
            return True
    use_eager_attention(model)
    return False


def use_eager_attention(model: Any) -> None:
    """Switch ``model`` (in place) to eager attention, which returns attention maps."""
    current = getattr(model.config, "_attn_implementation", None)
    if current == "eager":
        return
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:  # transformers releases before set_attn_implementation
        model.config._attn_implementation = "eager"
    logger.info(
        "%s: attention implementation switched from %r to 'eager' so that output_attentions "
        "returns the attention maps ehrlens explains; the model keeps eager attention",
        type(model).__name__,
        current,
    )


def attention_modules(model: Any) -> dict[nn.Module, int]:
    """``{attention module: index of its map in the module's output}``, input side first,
    found by class (see :func:`~.hf_modules.find_attention_modules`)."""
    return find_attention_modules(model)


class _MapSummary(NamedTuple):
    sums: Tensor  # [batch, heads, tokens]
    minima: Tensor  # [batch, heads, tokens]


def check_attention_map(
    name: str, layer: int, attention: Any, real: Tensor, causal: bool = False
) -> None:
    """One layer's map, as :func:`checked_attentions` checks each map, without copying it:
    ``[batch, heads, tokens, tokens]``, post-softmax rows at real tokens and, for layer 0,
    some real token attending to a later one (bidirectional) or, with ``causal``, none.

    Raises:
        ValueError: naming the model class and the layer.
    """
    _check_map(name, layer, attention, real)
    if layer == 0:
        _check_direction(name, attention, real, causal)


def checked_attentions(
    model: Any,
    outputs: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    causal: bool = False,
) -> list[Tensor]:
    """The ``outputs.attentions`` maps, checked to be bidirectional self-attention per token.

    Each map must be ``[batch, heads, tokens, tokens]``; the rows of real tokens must be
    probabilities (non-negative, summing to 1: post-softmax weights, not raw scores); some real
    token must attend to a later one (not causal), or with ``causal`` none may.

    Raises:
        TypeError: the model returned no maps with ``output_attentions=True``.
        ValueError: a map breaks one of the rules above.
    """
    name = type(model).__name__
    maps = getattr(outputs, "attentions", None)
    if not maps or any(m is None for m in maps):
        implementation = getattr(model.config, "_attn_implementation", None)
        raise TypeError(
            f"{name} returned no attention maps with output_attentions=True (attention "
            f"implementation {implementation!r}); ehrlens needs a model that "
            "exposes its self-attention maps [batch, heads, tokens, tokens]"
        )
    real = real_tokens({FEATURE_KEY: input_ids, "attention_mask": attention_mask})
    for layer, attention in enumerate(maps):
        check_attention_map(name, layer, attention, real, causal)
    return list(maps)


def _check_direction(name: str, attention: Tensor, real: Tensor, causal: bool) -> None:
    """Bidirectional (``causal=False``): some real token must attend to a later real token;
    causal: none may. Checked in blocks of query rows (at most about 2**22 weights at a
    time), stopped at the first block that decides."""
    batch, heads, tokens, _ = attention.shape
    if tokens < 2:
        return
    keys = torch.arange(tokens, device=real.device)
    rows_per_block = max(1, (1 << 22) // max(1, batch * heads * tokens))
    any_pair = False
    with torch.no_grad():
        for start in range(0, tokens - 1, rows_per_block):
            stop = min(tokens, start + rows_per_block)
            queries = keys[start:stop]
            later = keys[None, :] > queries[:, None]  # [rows, keys]
            pairs = real[:, start:stop, None] & real[:, None, :] & later  # [batch, rows, keys]
            if not bool(pairs.any()):
                continue
            any_pair = True
            block = attention.detach()[:, :, start:stop]
            if bool((block > 0).logical_and_(pairs[:, None]).any()):
                if causal:
                    raise ValueError(
                        f"{name}: a token attends to a later token, but the model was taken "
                        "for a decoder (an attention module has is_causal=True); its "
                        "readout at the last token would not hold"
                    )
                return
    if any_pair and not causal:
        raise ValueError(
            f"{name}: no token attends to a later token (causal attention); "
            "HuggingFaceEncoder explains encoders with bidirectional self-attention; wrap "
            "decoders with HuggingFaceModel"
        )


def _check_map(name: str, layer: int, attention: Any, real: Tensor) -> None:
    batch, tokens = real.shape
    if (
        not isinstance(attention, Tensor)
        or attention.dim() != 4
        or attention.shape[0] != batch
        or tuple(attention.shape[-2:]) != (tokens, tokens)
    ):
        shape = tuple(attention.shape) if isinstance(attention, Tensor) else type(attention)
        raise ValueError(
            f"{name}: attention of layer {layer} is {shape}, expected [batch={batch}, heads, "
            f"tokens={tokens}, tokens={tokens}] (self-attention over every input token); "
            "architectures whose attention pools, chunks or windows tokens are not supported"
        )
    with torch.no_grad():  # reductions over each row: no copy of the map
        detached = attention.detach()
        summary = _MapSummary(detached.sum(dim=-1), detached.amin(dim=-1))
    rows = real[:, None, :].expand_as(summary.sums)  # [batch, heads, tokens]: real queries
    sums, minima = summary.sums[rows].float(), summary.minima[rows].float()
    tolerance = 1e-3 if attention.dtype in (torch.float32, torch.float64) else 1e-2
    if sums.numel() and (bool((minima < 0).any()) or bool(((sums - 1).abs() > tolerance).any())):
        raise ValueError(
            f"{name}: attention of layer {layer} is not post-softmax weights (the rows of real "
            "tokens must be non-negative and sum to 1; got row sums from "
            f"{float(sums.min()):.3g} to {float(sums.max()):.3g} and minimum "
            f"{float(minima.min()):.3g}); its output_attentions are not attention probabilities"
        )


def real_tokens(data: Mapping[str, Any]) -> Tensor:
    """``bool [batch, tokens]``: True where ``attention_mask`` is nonzero (all without one)."""
    input_ids = data[FEATURE_KEY]
    attention_mask = data.get("attention_mask")
    if attention_mask is None:
        return torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, expected the shape of "
            f"{FEATURE_KEY} {tuple(input_ids.shape)}"
        )
    return attention_mask.to(input_ids.device) != 0


def scored_positions(data: Mapping[str, Any]) -> Tensor:
    """``bool [batch, tokens]``: real tokens (``attention_mask``), minus special tokens when
    the batch has the tokenizer's ``special_tokens_mask``."""
    input_ids = data[FEATURE_KEY]
    scored = real_tokens(data)
    special = data.get("special_tokens_mask")
    if special is not None:
        scored = scored & (special.to(input_ids.device) == 0)
    return scored


def sentence_embedding(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    pooling: str = "mean",
    **inputs: Any,
) -> Tensor:
    """Pooled embeddings ``[batch, hidden]`` of a base encoder (e.g. a reference for
    :func:`similarity_to`).

    Args:
        model: a ``transformers`` base encoder, or a :class:`HuggingFaceEncoder` wrapping one.
        input_ids / attention_mask: ``[batch, tokens]`` from the tokenizer.
        pooling: ``"mean"`` over real tokens or ``"cls"`` (see :func:`pool`).
        inputs: further model inputs; tokenizer-only keys are dropped.

    Example:
        >>> with torch.no_grad():
        ...     reference = sentence_embedding(bert, **tokenizer(["chest pain"],
        ...                                    return_tensors="pt"))[0]          # [hidden]
        >>> reference.shape
        torch.Size([384])
    """
    if isinstance(model, HuggingFaceModel):
        model = model.model
    model_inputs = {k: v for k, v in inputs.items() if k not in TOKENIZER_ONLY_KEYS}
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, **model_inputs)
    return pool(last_hidden_state(outputs), attention_mask, pooling)

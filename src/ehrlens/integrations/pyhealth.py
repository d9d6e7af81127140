"""PyHealth models explained by ehrlens, unchanged, whichever PyHealth release built them.

Two ways in, neither importing PyHealth:

- The model: :func:`wrap` (or :class:`PyHealthModel` / :class:`PyHealthGradientModel`) sees
  any PyHealth model through ehrlens's interface, for ehrlens's own interpreters with
  ehrlens's conventions; :func:`register` declares a PyHealth 2.0.x class, whose models are
  then passed as they are.
- The call: :class:`CheferRelevance`, :class:`AttentionRollout`,
  :class:`IntegratedGradients`, :class:`InputXGradient` and :class:`RetainContributions` here
  are called as PyHealth calls its interpreters: built on the PyHealth model itself,
  ``attribute(**batch)`` (alias ``get_relevance_matrix``), the class to explain as PyHealth
  means it (``class_index`` in the batch, PyHealth 2.0a13; or ``target_class_idx``, 2.0.x).

The class index, the one difference to know: PyHealth indexes logit columns, so for a binary
model (one logit) index 0 is that logit, the positive class. ehrlens's own interpreters
number the explained classes, so ``target_class_idx=0`` explains the negative class (the
negated logit) and ``1`` the positive one. The interpreters here take PyHealth's meaning; a
binary index other than 0 is refused rather than ignored.

Which PyHealth interface each model has (see :func:`interface_of`): 2.0.x
(``set_attention_hooks`` / ``get_attention_layers`` / ``get_relevance_tensor``), 2.0a13
(``forward(..., register_hook=True)``, ``get_attn_map()`` / ``get_attn_grad()`` on
``transformer[key].transformer[i].attention``), or no attention (StageNet, RETAIN, AdaCare,
RNN: gradient methods through the embedding model). Tuple features are read by
``model.dataset.input_processors[key].schema()``, with an extra last element taken as the
mask (``StageAttentionNet``); a float vector ``[batch, features]`` (PyHealth's ``tensor``
processor) is one attention position and gets one score per sample, ``[batch, 1]``.

Example:
    >>> from ehrlens.integrations.pyhealth import CheferRelevance
    >>> scores = CheferRelevance(pyhealth_transformer).attribute(**batch)   # as PyHealth's
    >>> scores["diagnoses"].shape                                            # [batch, seq]
    torch.Size([3, 5])
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..interpret import methods
from ..interpret.api import AttentionInterpretable, describe
from ..interpret.methods.base import BaseInterpreter
from .pyhealth_models import (
    REQUIRED_METHODS,
    PyHealthGradientModel,
    PyHealthInterpretable,
    PyHealthModel,
    interface_of,
    missing_methods,
    register,
    wrap,
)
from .pyhealth_retain import RetainContributions as _RetainContributions

#: Batch entries of PyHealth's calling convention that are not model inputs: the explained
#: class (``class_index``) and the capture switches its interpreters set themselves.
CALL_KEYS = ("class_index", "register_hook", "register_attn_hook")


def pyhealth_target(
    index: int | Tensor | None,
    mode: str | None,
    feature: str = "class_index",
    outputs: int | None = None,
) -> int | Tensor | None:
    """PyHealth's class index (a logit column) as ehrlens's ``target_class_idx``.

    Binary (``mode``, or one logit column when the mode is unknown): PyHealth's only logit,
    index 0, is ehrlens's class 1 (``None`` too); other modes: the same index.

    Raises:
        ValueError: a binary index other than 0 (PyHealth's binary model has one logit),
            naming the argument.

    Example:
        >>> pyhealth_target(0, "binary"), pyhealth_target(2, "multiclass")
        (1, 2)
    """
    if mode != "binary" and not (mode is None and outputs == 1):
        return index
    if index is None:
        return 1
    values = index.reshape(-1).tolist() if isinstance(index, Tensor) else [index]
    if any(v != 0 for v in values):
        raise ValueError(
            f"{feature}={values[0] if len(values) == 1 else values}: a binary PyHealth model "
            "has one logit, index 0 (the positive class). To explain the negative class use "
            "ehrlens's own interpreters, where target_class_idx=0 is the negated logit"
        )
    return 1


class PyHealthInterpreter:
    """An ehrlens method, built on a PyHealth model and called as PyHealth calls its own.

    Subclasses name the ehrlens method (``method``). The model is wrapped with :func:`wrap`
    unless it already is an ehrlens wrapper.

    Args:
        model: a PyHealth model (any interface), or a wrapper from :func:`wrap`.
        **params: the ehrlens method's settings (e.g. ``n_steps`` for integrated gradients).

    Example:
        >>> relevance = CheferRelevance(pyhealth_transformer)
        >>> batch["class_index"] = 0                       # PyHealth 2.0a13 style
        >>> scores = relevance.get_relevance_matrix(**batch)
        >>> sorted(scores)
        ['diagnoses', 'labs', 'visits']
    """

    #: The ehrlens interpreter class run underneath.
    method: ClassVar[type[BaseInterpreter]]

    def __init__(self, model: nn.Module, **params: Any) -> None:
        self.model = model
        wrapped = model if isinstance(model, PyHealthGradientModel) else wrap(model)
        attention = any(
            isinstance(n, type) and issubclass(n, AttentionInterpretable) for n in self.method.needs
        )
        if attention and not isinstance(wrapped, AttentionInterpretable):
            inner = type(getattr(wrapped, "model", wrapped)).__name__
            raise TypeError(
                f"{type(self).__name__} reads attention maps, and {inner} has none (no "
                "AttentionInterpretable interface): explain it with IntegratedGradients or "
                "InputXGradient (RetainContributions for RETAIN), which reach its codes through "
                "its embedding model"
            )
        #: The ehrlens interpreter, with ehrlens's conventions.
        self.interpreter = self.method(wrapped, **params)

    def attribute(
        self, target_class_idx: int | Tensor | None = None, **data: Any
    ) -> dict[str, Tensor]:
        """Scores per input, ``{feature: Tensor}`` (see the ehrlens method for shapes; a
        float vector feature: ``[batch, 1]``).

        Args:
            target_class_idx: PyHealth 2.0.x's argument: the logit column to explain
                (binary: 0 or ``None``); ``None``: the predicted class.
            **data: the batch, as PyHealth's dataloader gives it; ``class_index`` in it
                (PyHealth 2.0a13) means the same as ``target_class_idx``;
                ``register_hook`` / ``register_attn_hook`` are ignored (capture is the
                interpreter's job).

        Raises:
            ValueError: ``class_index`` and ``target_class_idx`` disagree, or a binary
                index is not 0.
        """
        class_index = data.pop("class_index", None)
        for key in CALL_KEYS[1:]:
            data.pop(key, None)
        if class_index is not None and target_class_idx is not None:
            same = torch.equal(torch.as_tensor(class_index), torch.as_tensor(target_class_idx))
            if not same:
                raise ValueError(
                    f"class_index={class_index} and target_class_idx={target_class_idx} "
                    "disagree: give the class to explain once"
                )
        index = class_index if class_index is not None else target_class_idx
        argument = "class_index" if class_index is not None else "target_class_idx"
        description = describe(self.interpreter.model)
        target = pyhealth_target(index, description.mode, argument, description.output_size)
        return self.interpreter.attribute(target, **data)

    def get_relevance_matrix(self, **data: Any) -> dict[str, Tensor]:
        """PyHealth's older name of :meth:`attribute`."""
        return self.attribute(**data)

    def __call__(self, **data: Any) -> dict[str, Tensor]:
        return self.attribute(**data)


class CheferRelevance(PyHealthInterpreter):
    """Chefer et al.'s relevance (:class:`ehrlens.interpret.CheferRelevance`), called as
    PyHealth's ``CheferRelevance``; equal to it on the same weights.

    Example:
        >>> scores = CheferRelevance(pyhealth_transformer).attribute(**batch)
    """

    method = methods.CheferRelevance


class AttentionRollout(PyHealthInterpreter):
    """Attention rollout (:class:`ehrlens.interpret.AttentionRollout`), PyHealth's call.

    Example:
        >>> scores = AttentionRollout(pyhealth_transformer, head_fusion="max")(**batch)
    """

    method = methods.AttentionRollout


class IntegratedGradients(PyHealthInterpreter):
    """Integrated gradients on each feature's embedding output
    (:class:`ehrlens.interpret.IntegratedGradients`), for every PyHealth model.

    Example:
        >>> scores = IntegratedGradients(pyhealth_rnn, n_steps=32).attribute(**batch)
        >>> scores["visits"].shape                          # [batch, visits, codes]
        torch.Size([3, 4, 3])
    """

    method = methods.IntegratedGradients


class InputXGradient(PyHealthInterpreter):
    """Embedding × gradient (:class:`ehrlens.interpret.InputXGradient`), for every PyHealth
    model.

    Example:
        >>> scores = InputXGradient(pyhealth_rnn).attribute(**batch)
    """

    method = methods.InputXGradient


class RetainContributions(PyHealthInterpreter):
    """RETAIN's own contribution scores (Choi et al. 2016;
    :class:`~ehrlens.integrations.pyhealth_retain.RetainContributions`), PyHealth's call.

    Example:
        >>> scores = RetainContributions(pyhealth_retain).attribute(**batch)
    """

    method = _RetainContributions


__all__ = [
    "CALL_KEYS",
    "REQUIRED_METHODS",
    "AttentionRollout",
    "CheferRelevance",
    "InputXGradient",
    "IntegratedGradients",
    "PyHealthGradientModel",
    "PyHealthInterpretable",
    "PyHealthInterpreter",
    "PyHealthModel",
    "RetainContributions",
    "interface_of",
    "missing_methods",
    "pyhealth_target",
    "register",
    "wrap",
]

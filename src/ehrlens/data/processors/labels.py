"""Label processors: one class per output schema string.

``"binary"``, ``"multiclass"``, ``"multilabel"`` and ``"regression"``; each maps a sample's
label to the target tensor of its loss and says how many logits the model needs.

Example:
    >>> proc = MulticlassLabelProcessor()
    >>> proc.fit(["flu", "cold", "flu"], key="diagnosis")
    >>> proc.process("flu", key="diagnosis"), proc.output_size
    (tensor(1), 2)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from .base import LabelProcessor
from .checks import code_list, is_number, type_name, where
from .registry import register_processor


def _label_scalar(value: Any, key: str, index: int | None) -> Hashable:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where(key, index, 'label')}: label must be finite, got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise TypeError(
            f"{where(key, index, 'label')}: expected a single label value, got {type_name(value)}"
        )
    return value


#: Pairs of label values whose positive class goes without saying (compared ignoring case):
#: ``(negative, positive)``. Any other two values need ``positive_class``.
OBVIOUS_PAIRS: tuple[tuple[str, str], ...] = (("0", "1"), ("false", "true"), ("no", "yes"))


def _label_name(value: Hashable) -> str:
    """A label value as a class name: ``True`` / ``False`` as ``"1"`` / ``"0"``, whole floats
    as ints (``1.0`` -> ``"1"``), other values as text."""
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return str(value)


@register_processor
class BinaryLabelProcessor(LabelProcessor):
    """``"binary"``: 0/1 (or False/True, no/yes) -> ``[1]`` float.

    Any other two values (``"low"`` / ``"high"``) need ``positive_class``, the value the
    model's probability is about: no order is guessed from the spelling.

    Example:
        >>> proc = BinaryLabelProcessor(positive_class="high")
        >>> proc.fit(["low", "high", "low"], key="risk")
        >>> proc.class_names, proc.process("high", key="risk")
        (['low', 'high'], tensor([1.]))
    """

    schema = "binary"

    def __init__(self, positive_class: str | None = None) -> None:
        self.label_map: dict[str, int] | None = None
        self.positive_class = positive_class

    @property
    def output_size(self) -> int:
        return 1

    @property
    def class_names(self) -> list[str] | None:
        """``[negative, positive]`` (``["0", "1"]`` for 0/1 labels); None before fit."""
        if self.label_map is None:
            return None
        return [name for name, _ in sorted(self.label_map.items(), key=lambda item: item[1])]

    def fit(self, values: Sequence[Any], key: str) -> None:
        seen: dict[Hashable, int] = {}
        for index, value in enumerate(values):
            seen.setdefault(_label_scalar(value, key, index), index)
        if set(seen) <= {0, 1} and self.positive_class is None:
            self.label_map = {"0": 0, "1": 1}  # True == 1 and False == 0: bools are covered
            return
        if len(seen) != 2:
            values = list(seen)
            # Name the first sample whose value makes the set impossible.
            culprit = values[2] if len(values) > 2 else values[0]
            shown = ", ".join(sorted(map(repr, values))[:6])
            raise ValueError(
                f"{where(key, seen[culprit], 'label')}: a binary label needs 0/1 or exactly "
                f"two distinct values; got {culprit!r}, and {len(seen)} values in all: {shown}"
            )
        names = sorted({_label_name(v) for v in seen})
        positive = self._positive(names, key)
        negative = next(name for name in names if name != positive)
        self.label_map = {negative: 0, positive: 1}

    def _positive(self, names: list[str], key: str) -> str:
        """Which of the two value names is the positive class."""
        shown = " and ".join(repr(n) for n in names)
        if self.positive_class is not None:
            wanted = str(self.positive_class)
            matches = [n for n in names if n == wanted] or [
                n for n in names if n.lower() == wanted.lower()
            ]
            if len(matches) != 1:
                raise ValueError(
                    f"label '{key}': positive class {wanted!r} is not one of its two values, "
                    f"{shown}"
                )
            return matches[0]
        folded = {n.lower(): n for n in names}
        for negative, positive in OBVIOUS_PAIRS:
            if set(folded) == {negative, positive}:
                return folded[positive]
        either = " or ".join(f"positive_class={n!r}" for n in names)
        flags = " or ".join(f"--positive-class {n}" for n in names)
        raise ValueError(
            f"label '{key}': a binary label with the values {shown} does not say which one is "
            f"positive (the class whose probability the model gives); name it: {either} "
            f"(command line: {flags})"
        )

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        if self.label_map is None:
            raise RuntimeError(f"label '{key}': processor used before fit()")
        scalar = _label_scalar(value, key, index)
        zero_one = self.label_map.keys() == {"0", "1"}
        name = str(int(cast(int, scalar))) if zero_one and scalar in (0, 1) else str(scalar)
        if name not in self.label_map:
            name = _label_name(scalar)
        if name not in self.label_map:
            raise ValueError(
                f"{where(key, index, 'label')}: binary label must be one of "
                f"{sorted(self.label_map)}, got {value!r}"
            )
        return torch.tensor([float(self.label_map[name])])

    def state_dict(self) -> dict[str, Any]:
        return {"label_map": self.label_map}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.label_map = dict(state["label_map"])


@register_processor
class MulticlassLabelProcessor(LabelProcessor):
    """``"multiclass"``: one class label -> class index (``LongTensor []``)."""

    schema = "multiclass"

    def __init__(self) -> None:
        self.classes: list[str] = []

    @property
    def output_size(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str] | None:
        return list(self.classes) if self.classes else None

    def fit(self, values: Sequence[Any], key: str) -> None:
        raw = {_label_scalar(v, key, i) for i, v in enumerate(values)}
        if len(raw) < 2:
            raise ValueError(f"label '{key}': multiclass needs at least two classes, got {raw}")
        integers = all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
        # Integer classes keep numeric order, so column j of y_prob is class j for 0..C-1.
        self.classes = (
            [str(v) for v in sorted(cast(list[int], list(raw)))]
            if integers
            else sorted(map(str, raw))
        )

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        name = str(_label_scalar(value, key, index))
        try:
            return torch.tensor(self.classes.index(name))
        except ValueError:
            raise ValueError(
                f"{where(key, index, 'label')}: unknown class {value!r}; "
                f"known classes: {self.classes}"
            ) from None

    def state_dict(self) -> dict[str, Any]:
        return {"classes": self.classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])


@register_processor
class MultilabelLabelProcessor(LabelProcessor):
    """``"multilabel"``: a list of labels -> multi-hot ``FloatTensor [num_labels]``."""

    schema = "multilabel"

    def __init__(self) -> None:
        self.classes: list[str] = []

    @property
    def output_size(self) -> int:
        return len(self.classes)

    def _labels(self, value: Any, key: str, index: int | None) -> list[str]:
        return [str(c) for c in code_list(value, key, index, what="a list of labels", kind="label")]

    @property
    def class_names(self) -> list[str] | None:
        return list(self.classes) if self.classes else None

    def fit(self, values: Sequence[Any], key: str) -> None:
        seen: set[str] = set()
        for index, value in enumerate(values):
            seen.update(self._labels(value, key, index))
        if not seen:
            raise ValueError(f"label '{key}': no sample has any label")
        self.classes = sorted(seen)

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        out = torch.zeros(len(self.classes))
        lookup = {c: i for i, c in enumerate(self.classes)}
        for label in self._labels(value, key, index):
            if label not in lookup:
                raise ValueError(f"{where(key, index, 'label')}: unknown label {label!r}")
            out[lookup[label]] = 1.0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"classes": self.classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])


@register_processor
class RegressionLabelProcessor(LabelProcessor):
    """``"regression"``: a number -> ``FloatTensor [1]``."""

    schema = "regression"

    @property
    def output_size(self) -> int:
        return 1

    def fit(self, values: Sequence[Any], key: str) -> None:
        for index, value in enumerate(values):
            self.process(value, key, index)

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        scalar = _label_scalar(value, key, index)
        if not is_number(scalar):
            raise TypeError(
                f"{where(key, index, 'label')}: regression label must be a number, got {value!r}"
            )
        try:
            return torch.tensor([float(cast(float, scalar))])
        except OverflowError:
            raise ValueError(
                f"{where(key, index, 'label')}: regression label must be finite, got an "
                "integer too large for a float"
            ) from None

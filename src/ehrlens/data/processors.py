"""Processors turn one field of a patient sample into tensors: one class per schema string.

A processor is fitted once on a dataset (vocabularies, label maps), then converts each sample's
value and pads a list of converted values into a batch. Its fitted state is a plain dict so a
trained model can carry it and score new patients with the same vocabulary.

Schema strings
--------------
Inputs: ``"sequence"``, ``"nested_sequence"``, ``"timeseries"``, ``"stagenet"``, ``"tensor"``.
Outputs: ``"binary"``, ``"multiclass"``, ``"multilabel"``, ``"regression"``.

Example:
    >>> proc = SequenceProcessor()
    >>> proc.fit([["I10", "E11.9"], ["I10"]], key="conditions")
    >>> proc.process(["E11.9", "Z99"], key="conditions", index=0)   # Z99 is unseen -> 1
    tensor([2, 1])
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

PAD_ID = 0
UNK_ID = 1
_SPECIAL_TOKENS = ("<pad>", "<unk>")


def _where(key: str, index: int | None, kind: str = "feature") -> str:
    return f"{kind} '{key}'" if index is None else f"sample {index}, {kind} '{key}'"


def _type_name(value: Any) -> str:
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_float(number: int | float, key: str, index: int | None, what: str) -> float:
    """``float(number)``, or a ValueError naming the sample and key when it is NaN, infinite
    or an integer too large for a float (which would otherwise raise ``OverflowError``)."""
    try:
        value = float(number)
    except OverflowError:
        raise ValueError(
            f"{_where(key, index)}: {what} must be finite, got an integer too large for a float"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{_where(key, index)}: {what} must be finite, got {value!r}")
    return value


def _code_list(
    value: Any, key: str, index: int | None, what: str = "a list of codes", kind: str = "feature"
) -> list:
    """Validate a flat list of codes (str or int) and return it as a list."""
    where = _where(key, index, kind)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{where}: expected {what}, got {_type_name(value)}")
    for position, code in enumerate(value):
        if not isinstance(code, (str, int)) or isinstance(code, bool):
            raise TypeError(
                f"{where}: expected {what} (str or int codes), "
                f"got {_type_name(code)} at position {position}"
            )
    return list(value)


def _visit_list(value: Any, key: str, index: int | None) -> list[list]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{_where(key, index)}: expected a list of visits (each a list of codes), "
            f"got {_type_name(value)}"
        )
    return [
        _code_list(visit, key, index, what=f"visit {v} to be a list of codes")
        for v, visit in enumerate(value)
    ]


def _time_list(value: Any, length: int, key: str, index: int | None) -> list[float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{_where(key, index)}: expected a list of times, got {_type_name(value)}")
    if len(value) != length:
        raise ValueError(
            f"{_where(key, index)}: expected {length} times (one per step), got {len(value)}"
        )
    times = []
    for position, t in enumerate(value):
        if not _is_number(t):
            raise TypeError(
                f"{_where(key, index)}: time at position {position} must be a number, "
                f"got {_type_name(t)}"
            )
        times.append(_finite_float(t, key, index, f"time at position {position}"))
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError(
            f"{_where(key, index)}: times must be non-decreasing (time of each step, "
            f"not gaps between steps), got {times}"
        )
    return times


def _pair(value: Any, key: str, index: int | None, what: str) -> tuple[Any, Any]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{_where(key, index)}: expected a pair {what}, got {_type_name(value)}")
    return value[0], value[1]


@dataclass
class CollatedFeature:
    """One feature of a batch: padded values, plus a step mask / step times where needed.

    Attributes:
        values: padded values, e.g. ``[batch, seq]`` codes or ``[batch, steps, features]``.
        mask: ``[batch, steps]`` validity, only for float features whose values cannot tell
            padding apart (``"timeseries"``); ``None`` where validity follows from the values.
        times: ``[batch, steps]`` time of each step (``"timeseries"``, ``"stagenet"``).
    """

    values: Tensor
    mask: Tensor | None = None
    times: Tensor | None = None


def _pad_stack(tensors: Sequence[Tensor], dtype: torch.dtype, value: float = 0) -> Tensor:
    """Pad tensors of equal rank to the largest size in every dim and stack them."""
    rank = tensors[0].dim()
    shape = [max(t.shape[d] for t in tensors) for d in range(rank)]
    out = torch.full((len(tensors), *shape), value, dtype=dtype)
    for i, t in enumerate(tensors):
        out[(i, *(slice(0, s) for s in t.shape))] = t
    return out


class Processor(ABC):
    """Base class of every processor: fit, convert one value, and (de)serialise state."""

    schema: ClassVar[str]

    @abstractmethod
    def fit(self, values: Sequence[Any], key: str) -> None:
        """Learn what the processor needs (vocabulary, label map) from all samples' values."""

    @abstractmethod
    def process(self, value: Any, key: str, index: int | None = None) -> Any:
        """Validate and convert one sample's value; errors name ``index`` and ``key``."""

    def state_dict(self) -> dict[str, Any]:
        """Fitted state as plain Python values (saved with a model)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict`."""
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


class TruncationWarning(UserWarning):
    """Samples longer than a processor's ``max_length`` were cut to their last steps.

    Issued by :func:`~ehrlens.data.create_sample_dataset` once per feature key, with the
    number of samples truncated; the counts are also in ``SampleDataset.truncated``.
    """


def _check_max_length(max_length: Any, key: str | None = None) -> int | None:
    if max_length is None:
        return None
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        where = "max_length" if key is None else f"feature '{key}': max_length"
        raise ValueError(f"{where} must be None or an int >= 1, got {max_length!r}")
    return max_length


class FeatureProcessor(Processor):
    """Processor of an input feature; also pads converted values into a batch."""

    #: True when the padded values are integer code ids (pad id 0).
    is_token_feature: ClassVar[bool] = False
    #: True for features ordered in time, which ``max_length`` can truncate.
    supports_max_length: ClassVar[bool] = False
    #: Longest number of steps (codes, visits, time steps) kept per sample; ``None`` keeps all.
    max_length: int | None = None
    #: Samples this processor has truncated in :meth:`process` since it was created.
    truncated_samples: int = 0

    @abstractmethod
    def collate(self, items: Sequence[Any]) -> CollatedFeature:
        """Pad a list of processed values to the longest item."""

    def _keep_last(self, steps: list, count: bool = True) -> list:
        """The last ``max_length`` steps (the most recent ones); counts a truncated sample."""
        if self.max_length is None or len(steps) <= self.max_length:
            return steps
        if count:
            self.truncated_samples += 1
        return steps[len(steps) - self.max_length :]


class _Vocabulary:
    """Code -> id map with ``<pad>`` = 0 and ``<unk>`` = 1; codes sorted for determinism."""

    def __init__(self) -> None:
        self.code_to_id: dict[str, int] = {}

    def fit(self, codes: set[str]) -> None:
        ordered = list(_SPECIAL_TOKENS) + sorted(codes)
        self.code_to_id = {code: i for i, code in enumerate(ordered)}

    def ids(self, codes: Sequence) -> list[int]:
        lookup = self.code_to_id
        return [lookup.get(str(code), UNK_ID) for code in codes]

    def __len__(self) -> int:
        return len(self.code_to_id)

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Codes of ``ids`` (``<pad>`` and ``<unk>`` for the special ids)."""
        codes = list(self.code_to_id)
        return [codes[i] for i in ids]


class _CodeProcessor(FeatureProcessor):
    """Shared vocabulary handling of the code-valued processors."""

    is_token_feature = True
    supports_max_length = True

    def __init__(self, max_length: int | None = None) -> None:
        self.vocabulary = _Vocabulary()
        self.max_length = _check_max_length(max_length)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.vocabulary)

    def _require_fitted(self, key: str) -> None:
        if len(self.vocabulary) == 0:
            raise RuntimeError(f"feature '{key}': processor used before fit()")

    def state_dict(self) -> dict[str, Any]:
        return {"vocabulary": list(self.vocabulary.code_to_id), "max_length": self.max_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        codes = state["vocabulary"]
        if isinstance(codes, (str, bytes)) or not isinstance(codes, Sequence):
            raise TypeError(f"vocabulary must be a list of codes, got {_type_name(codes)}")
        codes = list(codes)
        if tuple(codes[:2]) != _SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {_SPECIAL_TOKENS}, got {codes[:2]}")
        if not all(isinstance(code, str) for code in codes):
            raise TypeError("vocabulary entries must all be strings")
        if len(set(codes)) != len(codes):
            # A repeated code would shift every later id onto another code's embedding.
            repeated = sorted({c for c in codes if codes.count(c) > 1})[:5]
            raise ValueError(f"vocabulary has repeated codes {repeated}")
        self.vocabulary.code_to_id = {code: i for i, code in enumerate(codes)}
        self.max_length = _check_max_length(state.get("max_length"))


class SequenceProcessor(_CodeProcessor):
    """``"sequence"``: a list of codes -> ``LongTensor [seq]`` (pad 0, unknown 1).

    Args:
        max_length: keep only the last ``max_length`` codes of a longer sample (the most
            recent, for codes listed in time order); ``None`` keeps every code.
    """

    schema = "sequence"

    def fit(self, values: Sequence[Any], key: str) -> None:
        codes: set[str] = set()
        for index, value in enumerate(values):
            kept = self._keep_last(_code_list(value, key, index), count=False)
            codes.update(str(c) for c in kept)
        self.vocabulary.fit(codes)

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        self._require_fitted(key)
        codes = self._keep_last(_code_list(value, key, index))
        return torch.tensor(self.vocabulary.ids(codes), dtype=torch.long)

    def collate(self, items: Sequence[Tensor]) -> CollatedFeature:
        return CollatedFeature(values=_pad_stack(items, torch.long, PAD_ID))


class NestedSequenceProcessor(_CodeProcessor):
    """``"nested_sequence"``: a list of visits of codes -> ``LongTensor [visits, codes]``.

    Args:
        max_length: keep only the last ``max_length`` visits (every code of a kept visit);
            ``None`` keeps every visit.
    """

    schema = "nested_sequence"

    def fit(self, values: Sequence[Any], key: str) -> None:
        codes: set[str] = set()
        for index, value in enumerate(values):
            for visit in self._keep_last(_visit_list(value, key, index), count=False):
                codes.update(str(c) for c in visit)
        self.vocabulary.fit(codes)

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        self._require_fitted(key)
        visits = self._keep_last(_visit_list(value, key, index))
        return _visits_tensor([self.vocabulary.ids(v) for v in visits])

    def collate(self, items: Sequence[Tensor]) -> CollatedFeature:
        return CollatedFeature(values=_pad_stack(items, torch.long, PAD_ID))


def _visits_tensor(visits: list[list[int]]) -> Tensor:
    width = max((len(v) for v in visits), default=0)
    out = torch.full((len(visits), width), PAD_ID, dtype=torch.long)
    for i, ids in enumerate(visits):
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


class TimeseriesProcessor(FeatureProcessor):
    """``"timeseries"``: ``(times, values)`` with values ``[T, F]`` -> ``FloatTensor [T, F]``.

    The batch carries a step mask ``[batch, T]`` (zero is a valid measurement, so padding
    cannot be read off the values) and the step times ``[batch, T]``.

    Args:
        max_length: keep only the last ``max_length`` steps; ``None`` keeps every step.
    """

    schema = "timeseries"
    supports_max_length = True

    def __init__(self, max_length: int | None = None) -> None:
        self.num_features: int | None = None
        self.max_length = _check_max_length(max_length)

    def _parse(self, value: Any, key: str, index: int | None) -> tuple[list[float], list[list]]:
        times, rows = _pair(value, key, index, "(times, values) with values [T, F]")
        if isinstance(rows, Tensor):
            rows = rows.tolist()
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise TypeError(
                f"{_where(key, index)}: expected values as a [T, F] list of rows, "
                f"got {_type_name(rows)}"
            )
        parsed = []
        for t, row in enumerate(rows):
            if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
                raise TypeError(
                    f"{_where(key, index)}: row {t} must be a list of numbers, "
                    f"got {_type_name(row)}"
                )
            floats = []
            for f, x in enumerate(row):
                if not _is_number(x):
                    raise TypeError(
                        f"{_where(key, index)}: value [{t}, {f}] must be a number, "
                        f"got {_type_name(x)}"
                    )
                floats.append(
                    _finite_float(x, key, index, f"value [{t}, {f}] (NaN/inf not allowed)")
                )
            parsed.append(floats)
        widths = {len(r) for r in parsed}
        if len(widths) > 1:
            raise ValueError(
                f"{_where(key, index)}: every row must have the same number of features, "
                f"got row widths {sorted(widths)}"
            )
        if isinstance(times, Tensor):
            times = times.tolist()
        return _time_list(times, len(parsed), key, index), parsed

    def fit(self, values: Sequence[Any], key: str) -> None:
        widths = {}
        for index, value in enumerate(values):
            _, rows = self._parse(value, key, index)
            if rows:
                widths.setdefault(len(rows[0]), index)
        if len(widths) > 1:
            raise ValueError(
                f"feature '{key}': samples disagree on the number of features: "
                + ", ".join(f"{w} (first at sample {i})" for w, i in widths.items())
            )
        if not widths:
            raise ValueError(f"feature '{key}': no sample has a single time step to fit on")
        self.num_features = next(iter(widths))

    def process(self, value: Any, key: str, index: int | None = None) -> tuple[Tensor, Tensor]:
        if self.num_features is None:
            raise RuntimeError(f"feature '{key}': processor used before fit()")
        times, rows = self._parse(value, key, index)
        if rows and len(rows[0]) != self.num_features:
            raise ValueError(
                f"{_where(key, index)}: expected {self.num_features} features per step, "
                f"got {len(rows[0])}"
            )
        if self.max_length is not None and len(rows) > self.max_length:
            rows = self._keep_last(rows)
            times = times[len(times) - self.max_length :]
        values = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), self.num_features)
        return torch.tensor(times, dtype=torch.float32), values

    def collate(self, items: Sequence[tuple[Tensor, Tensor]]) -> CollatedFeature:
        times = [t for t, _ in items]
        values = [v for _, v in items]
        lengths = torch.tensor([len(t) for t in times])
        steps = int(lengths.max()) if len(items) else 0
        mask = torch.arange(steps)[None, :] < lengths[:, None]
        return CollatedFeature(
            values=_pad_stack(values, torch.float32),
            mask=mask,
            times=_pad_stack(times, torch.float32),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "max_length": self.max_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_features = int(state["num_features"])
        self.max_length = _check_max_length(state.get("max_length"))


class StageNetProcessor(_CodeProcessor):
    """``"stagenet"``: ``(times, codes)`` -> codes ``[T]`` or ``[T, codes]`` plus times ``[T]``.

    ``codes`` is either one code per step (flat) or a list of codes per step (nested); the
    layout is fixed at fit time. ``times`` may be ``None`` (steps one time unit apart).

    Args:
        max_length: keep only the last ``max_length`` steps (and their times); ``None``
            keeps every step.
    """

    schema = "stagenet"

    def __init__(self, max_length: int | None = None) -> None:
        super().__init__(max_length)
        self.nested: bool | None = None

    def _parse(
        self, value: Any, key: str, index: int | None
    ) -> tuple[list[float] | None, list, bool]:
        times, codes = _pair(value, key, index, "(times, codes)")
        if isinstance(codes, (str, bytes)) or not isinstance(codes, Sequence):
            raise TypeError(
                f"{_where(key, index)}: expected codes as a list (one code or one list of "
                f"codes per step), got {_type_name(codes)}"
            )
        nested_steps = [not isinstance(c, (str, int)) for c in codes]
        if any(nested_steps) and not all(nested_steps):
            raise TypeError(
                f"{_where(key, index)}: steps mix single codes and lists of codes; "
                "use one layout for every step"
            )
        nested = bool(codes) and all(nested_steps)
        if nested:
            codes = [
                _code_list(step, key, index, what=f"step {s} to be a list of codes")
                for s, step in enumerate(codes)
            ]
        else:
            codes = _code_list(codes, key, index)
        if isinstance(times, Tensor):
            times = times.tolist()
        parsed_times = None if times is None else _time_list(times, len(codes), key, index)
        return parsed_times, codes, nested

    def fit(self, values: Sequence[Any], key: str) -> None:
        vocab: set[str] = set()
        layouts: dict[bool, int] = {}
        for index, value in enumerate(values):
            _, codes, nested = self._parse(value, key, index)
            if codes:
                layouts.setdefault(nested, index)
            for step in self._keep_last(codes, count=False):
                vocab.update(str(c) for c in step) if nested else vocab.add(str(step))
        if len(layouts) > 1:
            raise TypeError(
                f"feature '{key}': samples mix flat codes (first at sample {layouts[False]}) "
                f"and lists of codes per step (first at sample {layouts[True]})"
            )
        self.nested = next(iter(layouts), False)
        self.vocabulary.fit(vocab)

    def process(self, value: Any, key: str, index: int | None = None) -> tuple[Tensor, Tensor]:
        self._require_fitted(key)
        times, codes, nested = self._parse(value, key, index)
        if codes and nested != self.nested:
            expected = "a list of codes per step" if self.nested else "one code per step"
            raise TypeError(f"{_where(key, index)}: expected {expected} (as at fit time)")
        if self.max_length is not None and len(codes) > self.max_length:
            codes = self._keep_last(codes)
            times = None if times is None else times[len(times) - self.max_length :]
        if self.nested:
            ids = _visits_tensor([self.vocabulary.ids(step) for step in codes])
        else:
            ids = torch.tensor(self.vocabulary.ids(codes), dtype=torch.long)
        steps = ids.shape[0]
        t = torch.arange(steps, dtype=torch.float32) if times is None else torch.tensor(times)
        return t.to(torch.float32), ids

    def collate(self, items: Sequence[tuple[Tensor, Tensor]]) -> CollatedFeature:
        return CollatedFeature(
            values=_pad_stack([ids for _, ids in items], torch.long, PAD_ID),
            times=_pad_stack([t for t, _ in items], torch.float32),
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "nested": self.nested}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.nested = bool(state["nested"])


class TensorProcessor(FeatureProcessor):
    """``"tensor"``: a fixed-size numeric vector -> ``FloatTensor [F]``."""

    schema = "tensor"

    def __init__(self) -> None:
        self.size: int | None = None

    def _parse(self, value: Any, key: str, index: int | None) -> list[float]:
        if isinstance(value, Tensor):
            value = value.tolist()
        if _is_number(value):
            value = [value]
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(
                f"{_where(key, index)}: expected a numeric vector, got {_type_name(value)}"
            )
        out = []
        for position, x in enumerate(value):
            if not _is_number(x):
                raise TypeError(
                    f"{_where(key, index)}: element {position} must be a number, "
                    f"got {_type_name(x)}"
                )
            out.append(_finite_float(x, key, index, f"element {position} (NaN/inf not allowed)"))
        return out

    def fit(self, values: Sequence[Any], key: str) -> None:
        sizes: dict[int, int] = {}
        for index, value in enumerate(values):
            sizes.setdefault(len(self._parse(value, key, index)), index)
        if len(sizes) > 1:
            raise ValueError(
                f"feature '{key}': vectors must all have the same length, got "
                + ", ".join(f"{n} (first at sample {i})" for n, i in sizes.items())
            )
        self.size = next(iter(sizes))
        if self.size == 0:
            raise ValueError(f"feature '{key}': vectors are empty")

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        if self.size is None:
            raise RuntimeError(f"feature '{key}': processor used before fit()")
        vector = self._parse(value, key, index)
        if len(vector) != self.size:
            raise ValueError(
                f"{_where(key, index)}: expected a vector of length {self.size}, "
                f"got length {len(vector)}"
            )
        return torch.tensor(vector, dtype=torch.float32)

    def collate(self, items: Sequence[Tensor]) -> CollatedFeature:
        return CollatedFeature(values=torch.stack(list(items)))

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])


# ----------------------------------------------------------------------------- labels


class LabelProcessor(Processor):
    """Processor of a label; ``output_size`` is the width of the model's logit."""

    @property
    @abstractmethod
    def output_size(self) -> int:
        """Number of logits the model must produce for this label."""

    def collate(self, items: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(items))


def _label_scalar(value: Any, key: str, index: int | None) -> Hashable:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{_where(key, index, 'label')}: label must be finite, got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise TypeError(
            f"{_where(key, index, 'label')}: expected a single label value, got {_type_name(value)}"
        )
    return value


class BinaryLabelProcessor(LabelProcessor):
    """``"binary"``: 0/1 (or False/True, or exactly two distinct values) -> ``[1]`` float."""

    schema = "binary"

    def __init__(self) -> None:
        self.label_map: dict[str, int] | None = None

    @property
    def output_size(self) -> int:
        return 1

    def fit(self, values: Sequence[Any], key: str) -> None:
        seen: dict[Hashable, int] = {}
        for index, value in enumerate(values):
            seen.setdefault(_label_scalar(value, key, index), index)
        if set(seen) <= {0, 1}:  # True == 1 and False == 0, so bools are covered too
            self.label_map = {"0": 0, "1": 1}
            return
        if len(seen) != 2:
            values = list(seen)
            # Name the first sample whose value makes the set impossible.
            culprit = values[2] if len(values) > 2 else values[0]
            shown = ", ".join(sorted(map(repr, values))[:6])
            raise ValueError(
                f"{_where(key, seen[culprit], 'label')}: a binary label needs 0/1 or exactly "
                f"two distinct values; got {culprit!r}, and {len(seen)} values in all: {shown}"
            )
        ordered = sorted(seen, key=str)
        self.label_map = {str(v): i for i, v in enumerate(ordered)}

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        if self.label_map is None:
            raise RuntimeError(f"label '{key}': processor used before fit()")
        scalar = _label_scalar(value, key, index)
        zero_one = self.label_map.keys() == {"0", "1"}
        name = str(int(scalar)) if zero_one and scalar in (0, 1) else str(scalar)
        if name not in self.label_map:
            raise ValueError(
                f"{_where(key, index, 'label')}: binary label must be one of "
                f"{sorted(self.label_map)}, got {value!r}"
            )
        return torch.tensor([float(self.label_map[name])])

    def state_dict(self) -> dict[str, Any]:
        return {"label_map": self.label_map}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.label_map = dict(state["label_map"])


class MulticlassLabelProcessor(LabelProcessor):
    """``"multiclass"``: one class label -> class index (``LongTensor []``)."""

    schema = "multiclass"

    def __init__(self) -> None:
        self.classes: list[str] = []

    @property
    def output_size(self) -> int:
        return len(self.classes)

    def fit(self, values: Sequence[Any], key: str) -> None:
        raw = {_label_scalar(v, key, i) for i, v in enumerate(values)}
        if len(raw) < 2:
            raise ValueError(f"label '{key}': multiclass needs at least two classes, got {raw}")
        integers = all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
        # Integer classes keep numeric order, so column j of y_prob is class j for 0..C-1.
        self.classes = [str(v) for v in sorted(raw)] if integers else sorted(map(str, raw))

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        name = str(_label_scalar(value, key, index))
        try:
            return torch.tensor(self.classes.index(name))
        except ValueError:
            raise ValueError(
                f"{_where(key, index, 'label')}: unknown class {value!r}; "
                f"known classes: {self.classes}"
            ) from None

    def state_dict(self) -> dict[str, Any]:
        return {"classes": self.classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])


class MultilabelLabelProcessor(LabelProcessor):
    """``"multilabel"``: a list of labels -> multi-hot ``FloatTensor [num_labels]``."""

    schema = "multilabel"

    def __init__(self) -> None:
        self.classes: list[str] = []

    @property
    def output_size(self) -> int:
        return len(self.classes)

    def _labels(self, value: Any, key: str, index: int | None) -> list[str]:
        return [
            str(c) for c in _code_list(value, key, index, what="a list of labels", kind="label")
        ]

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
                raise ValueError(f"{_where(key, index, 'label')}: unknown label {label!r}")
            out[lookup[label]] = 1.0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"classes": self.classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])


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
        if not _is_number(scalar):
            raise TypeError(
                f"{_where(key, index, 'label')}: regression label must be a number, got {value!r}"
            )
        try:
            return torch.tensor([float(scalar)])
        except OverflowError:
            raise ValueError(
                f"{_where(key, index, 'label')}: regression label must be finite, got an "
                "integer too large for a float"
            ) from None


FEATURE_PROCESSORS: dict[str, type[FeatureProcessor]] = {
    p.schema: p
    for p in (
        SequenceProcessor,
        NestedSequenceProcessor,
        TimeseriesProcessor,
        StageNetProcessor,
        TensorProcessor,
    )
}
LABEL_PROCESSORS: dict[str, type[LabelProcessor]] = {
    p.schema: p
    for p in (
        BinaryLabelProcessor,
        MulticlassLabelProcessor,
        MultilabelLabelProcessor,
        RegressionLabelProcessor,
    )
}


def make_feature_processor(
    schema: str, key: str, max_length: int | None = None
) -> FeatureProcessor:
    """Return a new processor for an input schema string; unknown strings raise ValueError.

    ``max_length`` (time-ordered schemas only: ``"sequence"``, ``"nested_sequence"``,
    ``"stagenet"``, ``"timeseries"``) keeps the last ``max_length`` steps of longer samples.
    """
    if not isinstance(schema, str) or schema not in FEATURE_PROCESSORS:
        raise ValueError(
            f"feature '{key}': unknown input schema {schema!r}; "
            f"expected one of {sorted(FEATURE_PROCESSORS)}"
        )
    cls = FEATURE_PROCESSORS[schema]
    if max_length is None:
        return cls()
    if not cls.supports_max_length:
        raise ValueError(
            f"feature '{key}': max_length does not apply to schema {schema!r} "
            "(only to time-ordered features)"
        )
    return cls(max_length=_check_max_length(max_length, key))  # type: ignore[call-arg]


def make_label_processor(schema: str, key: str) -> LabelProcessor:
    """Return a new processor for an output schema string; unknown strings raise ValueError."""
    if not isinstance(schema, str) or schema not in LABEL_PROCESSORS:
        raise ValueError(
            f"label '{key}': unknown output schema {schema!r}; "
            f"expected one of {sorted(LABEL_PROCESSORS)}"
        )
    return LABEL_PROCESSORS[schema]()

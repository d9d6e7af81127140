"""Numeric input types: ``"timeseries"`` (values per time step) and ``"tensor"`` (a vector).

Every number is a unit. Padding can not be read off the values (0 is a valid measurement),
so time series carry a step mask; vectors have none. A removed value becomes 0 or the mean of
its channel over the batch's real values.

Example:
    >>> proc = TensorProcessor()
    >>> proc.fit([[0.5, 1.0], [0.7, 0.0]], key="demographics")
    >>> values = proc.collate([proc.process(v, "demographics") for v in ([0.5, 1.0], [0.7, 0.0])])
    >>> proc.remove_units(values.values, torch.tensor([[True, False], [False, False]]), "mean")
    tensor([[0.6000, 1.0000], [0.7000, 0.0000]])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from .base import (
    Ablation,
    CollatedFeature,
    EventRow,
    EventRows,
    FeatureProcessor,
    LongUnit,
    check_max_length,
    pad_stack,
)
from .checks import finite_float, is_number, pair, time_list, type_name, where
from .registry import register_processor


def fitted(value: int | None, schema: str) -> int:
    """A size learnt by ``fit``; a RuntimeError when the processor was never fitted."""
    if value is None:
        raise RuntimeError(f"a '{schema}' processor was used before fit()")
    return int(value)


def measurement_names(events: EventRows) -> list[str]:
    """The measurement names of a numeric feature's event rows (set by the reader)."""
    if events.names is None:
        raise ValueError(f"feature '{events.key}': event rows without measurement names")
    return list(events.names)


class ElementwiseEmbedding(nn.Module):
    """One token per vector element: ``x[..., f] * W[f] + b[f]``.

    Shapes: ``[batch, features]`` -> ``[batch, features, dim]``.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(size, dim) / dim**0.5)
        self.bias = nn.Parameter(torch.zeros(size, dim))

    def forward(self, values: Tensor) -> Tensor:
        return values.to(self.weight.dtype)[..., None] * self.weight + self.bias


def ablate_numbers(values: Tensor, flags: Tensor, real: Tensor, ablation: Ablation) -> Tensor:
    """``values`` with the ``flags`` entries replaced by 0 (``"zero"``) or by the mean of
    their channel (the last dim) over the ``real`` entries of the batch (``"mean"``)."""
    if ablation == "zero":
        replacement = torch.zeros_like(values)
    else:
        dims = tuple(range(values.dim() - 1))  # every dim but the channel
        total = (values * real).sum(dim=dims)
        count = real.sum(dim=dims).clamp(min=1)
        replacement = (total / count).expand_as(values)
    return torch.where(flags, replacement, values)


class NumericProcessor(FeatureProcessor):
    """Shared by the numeric input types: a removed value becomes 0, or the mean of its
    channel over the batch's real units (:func:`ablate_numbers`).

    ``columns`` names the measurements (e.g. ``"LOINC//2160-0"``) in value order when the
    data said (MEDS codes, an event table's measurement names); they are saved with the model
    and are the ``code`` of each value's attribution row. Without them a value is named by
    its column index (``"0"``, ``"1"``, ...).
    """

    columns: list[str] | None = None

    def name_columns(self, names: Sequence[str] | None, key: str) -> None:
        """Name the measurements in value order.

        Raises:
            ValueError: as many names as values are needed.

        Example:
            >>> proc = TimeseriesProcessor()
            >>> proc.fit([([0.0, 24.0], [[1.1, 140.0], [0.9, 138.0]])], key="labs")  # 2 values
            >>> proc.column_name(1)                 # unnamed: the column index
            '1'
            >>> proc.name_columns(["LOINC//2160-0", "LOINC//2345-7"], key="labs")
            >>> proc.column_name(1)
            'LOINC//2345-7'
        """
        if names is None:
            self.columns = None
            return
        width = self._width()
        names = [str(n) for n in names]
        if width is not None and len(names) != width:
            raise ValueError(
                f"feature '{key}': {len(names)} measurement names for {width} values per step"
            )
        self.columns = names

    def _width(self) -> int | None:
        """Values per step (per vector), once fitted."""
        return None

    def column_name(self, column: int) -> str:
        """The measurement name of a value column (its index as text when unnamed)."""
        if self.columns is not None and 0 <= column < len(self.columns):
            return self.columns[column]
        return str(column)

    def remove_units(
        self,
        values: Tensor,
        flags: Tensor,
        ablation: Ablation = "zero",
        step_mask: Tensor | None = None,
    ) -> Tensor:
        """Removed values become 0 or their channel's mean over the batch's real units."""
        return ablate_numbers(values, flags, self.unit_mask(values, step_mask), ablation)


@register_processor
class TimeseriesProcessor(NumericProcessor):
    """``"timeseries"``: ``(times, values)`` with values ``[T, F]`` -> ``FloatTensor [T, F]``.

    The batch carries a step mask ``[batch, T]`` (zero is a valid measurement, so padding
    cannot be read off the values) and the step times ``[batch, T]``.

    Args:
        max_length: keep only the last ``max_length`` steps; ``None`` keeps every step.
    """

    schema = "timeseries"
    supports_max_length = True
    needs_step_mask = True
    event_kind = "measurements"

    def __init__(self, max_length: int | None = None) -> None:
        self.num_features: int | None = None
        self.max_length = check_max_length(max_length)

    def _parse(self, value: Any, key: str, index: int | None) -> tuple[list[float], list[list]]:
        times, rows = pair(value, key, index, "(times, values) with values [T, F]")
        if isinstance(rows, Tensor):
            rows = rows.tolist()
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise TypeError(
                f"{where(key, index)}: expected values as a [T, F] list of rows, "
                f"got {type_name(rows)}"
            )
        parsed = []
        for t, row in enumerate(rows):
            if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
                raise TypeError(
                    f"{where(key, index)}: row {t} must be a list of numbers, got {type_name(row)}"
                )
            floats = []
            for f, x in enumerate(row):
                if not is_number(x):
                    raise TypeError(
                        f"{where(key, index)}: value [{t}, {f}] must be a number, "
                        f"got {type_name(x)}"
                    )
                floats.append(
                    finite_float(x, key, index, f"value [{t}, {f}] (NaN/inf not allowed)")
                )
            parsed.append(floats)
        widths = {len(r) for r in parsed}
        if len(widths) > 1:
            raise ValueError(
                f"{where(key, index)}: every row must have the same number of features, "
                f"got row widths {sorted(widths)}"
            )
        if isinstance(times, Tensor):
            times = times.tolist()
        return time_list(times, len(parsed), key, index), parsed

    def fit(self, values: Sequence[Any], key: str) -> None:
        widths: dict[int, int] = {}  # number of features -> first sample with it
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
                f"{where(key, index)}: expected {self.num_features} features per step, "
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
            values=pad_stack(values, torch.float32),
            mask=mask,
            times=pad_stack(times, torch.float32),
        )

    @property
    def input_rank(self) -> int:
        return 3

    def unit_embedding(self, dim: int) -> nn.Module:
        """``nn.Linear(num_features, dim)``: one embedding per time step ``[..., T, dim]``."""
        return nn.Linear(fitted(self.num_features, "timeseries"), dim)

    def embed_units(self, key: str, unit: nn.Module, values: Tensor) -> Tensor:
        return unit(values.to(cast(nn.Linear, unit).weight.dtype))

    def unit_mask(self, values: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """Every value of a real step (``step_mask``; every step without one)."""
        if step_mask is None:
            return torch.ones(values.shape, dtype=torch.bool, device=values.device)
        return step_mask.to(torch.bool)[..., None].expand(values.shape)

    def position_mask(self, values: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """The step mask ``[batch, T]`` (every step without one)."""
        if step_mask is None:
            return torch.ones(values.shape[:2], dtype=torch.bool, device=values.device)
        return step_mask.to(torch.bool)

    def long_units(self, values: Tensor, step_mask: Tensor | None = None) -> Iterator[LongUnit]:
        """``(step, column, measurement name, index)`` for every value of a real step (the
        name is the column index as text when the measurements are unnamed)."""
        steps = values.shape[0] if step_mask is None else int(step_mask.sum())
        for t in range(steps):
            for f in range(values.shape[1]):
                yield t, f, self.column_name(f), (t, f)

    def from_events(self, events: EventRows) -> tuple[list[float], list[list[float]]]:
        """One step per distinct time; a measurement repeated at one time opens a further
        step at that time (nothing is overwritten). A measurement missing at a step carries
        its last value forward (0.0 before its first measurement)."""
        rows, names = events.rows, measurement_names(events)
        column = {name: i for i, name in enumerate(names)}
        repeat = rows.groupby(["time", "code"], sort=False).cumcount().to_numpy()
        keys = list(zip(rows["time"].tolist(), repeat.tolist(), strict=True))
        step_keys = sorted(set(keys))
        step = {k: i for i, k in enumerate(step_keys)}
        step_times = [t for t, _ in step_keys]
        grid = [[math.nan] * len(names) for _ in step_keys]
        for k, c, x in zip(keys, rows["code"], rows["value"], strict=True):
            grid[step[k]][column[c]] = float(x)
        last = [0.0] * len(names)
        for row in grid:
            for j, x in enumerate(row):
                if math.isnan(x):
                    row[j] = last[j]
                else:
                    last[j] = x
        return [float(t - events.start) for t in step_times], grid

    def event_steps(self, events: EventRows) -> list[tuple[Any, float]]:
        """One step per distinct time (and repeat), as :meth:`from_events` builds them."""
        rows = events.rows
        repeat = rows.groupby(["time", "code"], sort=False).cumcount().to_numpy()
        keys = sorted(set(zip(rows["time"].tolist(), repeat.tolist(), strict=True)))
        return [(None, float(t)) for t, _ in keys]

    def to_events(
        self, value: Any, key: str, patient_id: str, names: Sequence[str] | None = None
    ) -> Iterable[EventRow]:
        """One row per value: its step's time, its column's name (``"0"``, ... by default)."""
        step_times, grid = value
        for t, row in zip(step_times, grid, strict=True):
            for j, x in enumerate(row):
                yield None, float(t), str(j) if names is None else names[j], float(x)

    def _width(self) -> int | None:
        return self.num_features

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features, "max_length": self.max_length,
            "columns": self.columns,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_features = int(state["num_features"])
        self.max_length = check_max_length(state.get("max_length"))
        self.name_columns(state.get("columns"), "timeseries")


@register_processor
class TensorProcessor(NumericProcessor):
    """``"tensor"``: a fixed-size numeric vector -> ``FloatTensor [F]``."""

    schema = "tensor"
    event_kind = "measurements"

    def __init__(self) -> None:
        self.size: int | None = None

    def _parse(self, value: Any, key: str, index: int | None) -> list[float]:
        if isinstance(value, Tensor):
            value = value.tolist()
        if is_number(value):
            value = [value]
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(
                f"{where(key, index)}: expected a numeric vector, got {type_name(value)}"
            )
        out = []
        for position, x in enumerate(value):
            if not is_number(x):
                raise TypeError(
                    f"{where(key, index)}: element {position} must be a number, got {type_name(x)}"
                )
            out.append(finite_float(x, key, index, f"element {position} (NaN/inf not allowed)"))
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
                f"{where(key, index)}: expected a vector of length {self.size}, "
                f"got length {len(vector)}"
            )
        return torch.tensor(vector, dtype=torch.float32)

    def collate(self, items: Sequence[Tensor]) -> CollatedFeature:
        return CollatedFeature(values=torch.stack(list(items)))

    def unit_embedding(self, dim: int) -> nn.Module:
        """:class:`ElementwiseEmbedding`: one embedding per element ``[..., F, dim]``."""
        return ElementwiseEmbedding(fitted(self.size, "tensor"), dim)

    def unit_mask(self, values: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """Every element is real."""
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)

    def long_units(self, values: Tensor, step_mask: Tensor | None = None) -> Iterator[LongUnit]:
        """``(None, element, measurement name, index)`` for every element (the name is the
        element's index as text when the measurements are unnamed)."""
        for f in range(values.shape[0]):
            yield None, f, self.column_name(f), (f,)

    def from_events(self, events: EventRows) -> list[float]:
        """One value per measurement name; a missing or repeated one is a ValueError."""
        rows, names, pid, key = (
            events.rows,
            measurement_names(events),
            events.patient_id,
            events.key,
        )
        column = {name: i for i, name in enumerate(names)}
        vector = [math.nan] * len(names)
        for c, x in zip(rows["code"], rows["value"], strict=True):
            if not math.isnan(vector[column[c]]):  # a vector holds one value per measurement
                repeats = int((rows["code"] == c).sum())
                raise ValueError(
                    f"patient '{pid}', feature '{key}': {repeats} values for {c!r} (rows "
                    f"{', '.join(str(int(r) + 1) for r in rows.loc[rows['code'] == c, 'row'])}); "
                    "a tensor feature takes one value per measurement"
                )
            vector[column[c]] = float(x)
        absent = [n for n, x in zip(names, vector, strict=True) if math.isnan(x)]
        if absent:
            raise ValueError(f"patient '{pid}', feature '{key}': no value for {absent}")
        return vector

    def to_events(
        self, value: Any, key: str, patient_id: str, names: Sequence[str] | None = None
    ) -> Iterable[EventRow]:
        """One row per element at time 0, named by its column (``"0"``, ... by default)."""
        vector = [value] if isinstance(value, (int, float)) else list(value)
        for j, x in enumerate(vector):
            yield None, 0.0, str(j) if names is None else names[j], float(x)

    def _width(self) -> int | None:
        return self.size

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "columns": self.columns}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        self.name_columns(state.get("columns"), "tensor")

"""Code-valued input types: ``"sequence"``, ``"nested_sequence"`` and ``"stagenet"``.

Codes become ids of a vocabulary fitted on the training samples (``<pad>`` = 0, ``<unk>`` =
1, then the codes sorted). Every unit is a code; padding is the pad id. A code is embedded by
an ``nn.Embedding`` row (the pad row is 0), a visit is the mean of its codes' embeddings, and a
removed code becomes the pad id.

Example:
    >>> proc = SequenceProcessor()
    >>> proc.fit([["I10", "E11.9"], ["I10"]], key="conditions")
    >>> proc.process(["E11.9", "Z99"], key="conditions", index=0)   # Z99 is unseen -> 1
    tensor([2, 1])
    >>> proc.decode([2, 1, 0])
    ['E11.9', '<unk>', '<pad>']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from .base import (
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    Ablation,
    CollatedFeature,
    EventRow,
    EventRows,
    FeatureProcessor,
    LongUnit,
    check_max_length,
    pad_stack,
)
from .checks import code_list, pair, time_list, type_name, visit_list, where
from .registry import register_processor


class Vocabulary:
    """Code -> id map with ``<pad>`` = 0 and ``<unk>`` = 1; codes sorted for determinism."""

    def __init__(self) -> None:
        self.code_to_id: dict[str, int] = {}

    def fit(self, codes: set[str]) -> None:
        ordered = list(SPECIAL_TOKENS) + sorted(codes)
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


def visits_tensor(visits: list[list[int]]) -> Tensor:
    """Code ids per visit -> ``LongTensor [visits, codes]`` padded with the pad id."""
    width = max((len(v) for v in visits), default=0)
    out = torch.full((len(visits), width), PAD_ID, dtype=torch.long)
    for i, ids in enumerate(visits):
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def mean_over_codes(embedded: Tensor, ids: Tensor, pad_id: int = PAD_ID) -> Tensor:
    """``[batch, visits, codes, D]`` -> ``[batch, visits, D]``: each visit's mean over its real
    codes (an empty visit stays 0, since the pad row of the embedding is 0)."""
    counts = (ids != pad_id).sum(-1, keepdim=True).clamp(min=1)
    return embedded.sum(dim=-2) / counts.to(embedded.dtype)


class CodeProcessor(FeatureProcessor):
    """Shared handling of the code-valued processors: vocabulary, embedding, padding, removal.

    The batch tensor is ``[batch, seq]`` (one code per position) or ``[batch, visits, codes]``
    (a visit per position); units are the codes, padding is :attr:`pad_id`.
    """

    holds_codes = True
    supports_max_length = True
    event_kind = "codes"
    #: Id of padding (and of removed codes); ``None``: every id is a real code.
    pad_id: int | None = PAD_ID

    def __init__(self, max_length: int | None = None) -> None:
        self.vocabulary = Vocabulary()
        self.max_length = check_max_length(max_length)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.vocabulary)

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Codes of ``ids``: ``"<pad>"`` for 0, ``"<unk>"`` for codes unseen in training."""
        return self.vocabulary.decode(ids)

    def _require_fitted(self, key: str) -> None:
        if len(self.vocabulary) == 0:
            raise RuntimeError(f"feature '{key}': processor used before fit()")

    def state_dict(self) -> dict[str, Any]:
        return {"vocabulary": list(self.vocabulary.code_to_id), "max_length": self.max_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        codes = state["vocabulary"]
        if isinstance(codes, (str, bytes)) or not isinstance(codes, Sequence):
            raise TypeError(f"vocabulary must be a list of codes, got {type_name(codes)}")
        codes = list(codes)
        if tuple(codes[:2]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}, got {codes[:2]}")
        if not all(isinstance(code, str) for code in codes):
            raise TypeError("vocabulary entries must all be strings")
        if len(set(codes)) != len(codes):
            # A repeated code would shift every later id onto another code's embedding.
            repeated = sorted({c for c in codes if codes.count(c) > 1})[:5]
            raise ValueError(f"vocabulary has repeated codes {repeated}")
        self.vocabulary.code_to_id = {code: i for i, code in enumerate(codes)}
        self.max_length = check_max_length(state.get("max_length"))

    # ------------------------------------------------------------------ embedding
    def unit_embedding(self, dim: int) -> nn.Module:
        """``nn.Embedding(vocab_size, dim)`` whose pad row is 0: ids -> ``[..., dim]``."""
        return nn.Embedding(self.vocab_size, dim, padding_idx=PAD_ID)

    def embed_units(self, key: str, unit: nn.Module, values: Tensor) -> Tensor:
        """Embedding rows of the ids; an id outside the vocabulary is a ValueError naming the
        sample (e.g. ids converted with another model's vocabulary)."""
        size = cast(nn.Embedding, unit).num_embeddings
        if values.numel() and values.device.type != "meta":
            bad = ((values < 0) | (values >= size)).reshape(values.shape[0], -1).any(dim=1)
            if bool(bad.any()):
                index = int(bad.nonzero()[0, 0])
                row = values[index]
                wrong = int(row[(row < 0) | (row >= size)][0])
                raise ValueError(
                    f"feature '{key}': sample {index} has code id {wrong}, outside this "
                    f"model's vocabulary of {size} ids (0..{size - 1}); convert new patients "
                    "with the model's own vocabulary: create_sample_dataset(samples, "
                    "schema=model.schema)"
                )
        return unit(values)

    def pool_units(self, embedded: Tensor, values: Tensor) -> Tensor:
        """Visits ``[batch, visits, codes, D]`` become the mean of their codes."""
        if values.dim() == 3:
            return mean_over_codes(embedded, values)
        return embedded

    # ------------------------------------------------------------------ real units
    def unit_mask(self, values: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """True where the id is not :attr:`pad_id`."""
        if self.pad_id is None:
            return torch.ones(values.shape, dtype=torch.bool, device=values.device)
        return values != self.pad_id

    def remove_units(
        self,
        values: Tensor,
        flags: Tensor,
        ablation: Ablation = "zero",
        step_mask: Tensor | None = None,
    ) -> Tensor:
        """Removed codes become the pad id (for every ``ablation``); ids stay integers."""
        if self.pad_id is None:
            raise ValueError(f"schema '{self.schema}': codes without a pad id cannot be removed")
        return values.masked_fill(flags, self.pad_id)

    # ------------------------------------------------------------------ attribution table
    def long_units(self, values: Tensor, step_mask: Tensor | None = None) -> Iterator[LongUnit]:
        """Codes of a sequence as ``(None, position, code)``; codes of visits as ``(visit,
        position in the visit, code)``. Unknown codes read ``"<unk>"``; padding has no row."""
        ids = values.numpy()
        codes = np.array(self.decode(ids.reshape(-1).tolist()), dtype=object).reshape(ids.shape)
        real = ids != self.pad_id
        if ids.ndim == 1:
            for p in np.flatnonzero(real):
                yield self._flat_unit(int(p), codes[p])
            return
        for v, p in zip(*np.nonzero(real), strict=True):
            yield int(v), int(p), str(codes[v, p]), (int(v), int(p))

    def _flat_unit(self, position: int, code: str) -> LongUnit:
        return None, position, code, (position,)

    # ------------------------------------------------------------------ event tables
    @staticmethod
    def _codes_by_visit(events: EventRows) -> list[list[str]]:
        by_visit: dict[Any, list[str]] = {v: [] for v in events.visits}
        for v, c in zip(events.rows["visit"], events.rows["code"], strict=True):
            by_visit[v].append(c)
        return [by_visit[v] for v in events.visits]


@register_processor
class SequenceProcessor(CodeProcessor):
    """``"sequence"``: a list of codes -> ``LongTensor [seq]`` (pad 0, unknown 1).

    Args:
        max_length: keep only the last ``max_length`` codes of a longer sample (the most
            recent, for codes listed in time order); ``None`` keeps every code.
    """

    schema = "sequence"

    def fit(self, values: Sequence[Any], key: str) -> None:
        codes: set[str] = set()
        for index, value in enumerate(values):
            kept = self._keep_last(code_list(value, key, index), count=False)
            codes.update(str(c) for c in kept)
        self.vocabulary.fit(codes)

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        self._require_fitted(key)
        codes = self._keep_last(code_list(value, key, index))
        return torch.tensor(self.vocabulary.ids(codes), dtype=torch.long)

    def collate(self, items: Sequence[Tensor]) -> CollatedFeature:
        return CollatedFeature(values=pad_stack(items, torch.long, PAD_ID))

    def from_events(self, events: EventRows) -> list[str]:
        """The feature's codes in time order."""
        return events.rows["code"].tolist()

    def event_steps(self, events: EventRows) -> list[tuple[Any, float]]:
        """Each code's visit and time."""
        rows = events.rows
        return list(zip(rows["visit"].tolist(), rows["time"].tolist(), strict=True))

    def to_events(
        self, value: Any, key: str, patient_id: str, names: Sequence[str] | None = None
    ) -> Iterable[EventRow]:
        """One row per code, its position as time and visit."""
        for t, c in enumerate(value):
            yield f"{patient_id}-{t}", float(t), str(c), math.nan


@register_processor
class NestedSequenceProcessor(CodeProcessor):
    """``"nested_sequence"``: a list of visits of codes -> ``LongTensor [visits, codes]``.

    Args:
        max_length: keep only the last ``max_length`` visits (every code of a kept visit);
            ``None`` keeps every visit.
    """

    schema = "nested_sequence"

    @property
    def input_rank(self) -> int:
        return 3

    def fit(self, values: Sequence[Any], key: str) -> None:
        codes: set[str] = set()
        for index, value in enumerate(values):
            for visit in self._keep_last(visit_list(value, key, index), count=False):
                codes.update(str(c) for c in visit)
        self.vocabulary.fit(codes)

    def process(self, value: Any, key: str, index: int | None = None) -> Tensor:
        self._require_fitted(key)
        visits = self._keep_last(visit_list(value, key, index))
        return visits_tensor([self.vocabulary.ids(v) for v in visits])

    def collate(self, items: Sequence[Tensor]) -> CollatedFeature:
        return CollatedFeature(values=pad_stack(items, torch.long, PAD_ID))

    def from_events(self, events: EventRows) -> list[list[str]]:
        """One list of codes per visit of the patient (empty where the feature has none)."""
        return self._codes_by_visit(events)

    def event_steps(self, events: EventRows) -> list[tuple[Any, float]]:
        """The patient's visits and their times."""
        return [(v, float(events.visit_times[v])) for v in events.visits]

    def to_events(
        self, value: Any, key: str, patient_id: str, names: Sequence[str] | None = None
    ) -> Iterable[EventRow]:
        """One row per code, the visit's position as time."""
        for t, visit in enumerate(value):
            for c in visit:
                yield f"{patient_id}-{t}", float(t), str(c), math.nan


@register_processor
class StageNetProcessor(CodeProcessor):
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

    @property
    def input_rank(self) -> int:
        """3 for a list of codes per step, else 2."""
        return 3 if self.nested else 2

    def _parse(
        self, value: Any, key: str, index: int | None
    ) -> tuple[list[float] | None, list, bool]:
        times, codes = pair(value, key, index, "(times, codes)")
        if isinstance(codes, (str, bytes)) or not isinstance(codes, Sequence):
            raise TypeError(
                f"{where(key, index)}: expected codes as a list (one code or one list of "
                f"codes per step), got {type_name(codes)}"
            )
        nested_steps = [not isinstance(c, (str, int)) for c in codes]
        if any(nested_steps) and not all(nested_steps):
            raise TypeError(
                f"{where(key, index)}: steps mix single codes and lists of codes; "
                "use one layout for every step"
            )
        nested = bool(codes) and all(nested_steps)
        if nested:
            codes = [
                code_list(step, key, index, f"step {s} to be a list of codes", step=f"step {s}, ")
                for s, step in enumerate(codes)
            ]
        else:
            codes = code_list(codes, key, index)
        if isinstance(times, Tensor):
            times = times.tolist()
        parsed_times = None if times is None else time_list(times, len(codes), key, index)
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
            raise TypeError(f"{where(key, index)}: expected {expected} (as at fit time)")
        if self.max_length is not None and len(codes) > self.max_length:
            codes = self._keep_last(codes)
            times = None if times is None else times[len(times) - self.max_length :]
        if self.nested:
            ids = visits_tensor([self.vocabulary.ids(step) for step in codes])
        else:
            ids = torch.tensor(self.vocabulary.ids(codes), dtype=torch.long)
        steps = ids.shape[0]
        t = torch.arange(steps, dtype=torch.float32) if times is None else torch.tensor(times)
        return t.to(torch.float32), ids

    def collate(self, items: Sequence[tuple[Tensor, Tensor]]) -> CollatedFeature:
        return CollatedFeature(
            values=pad_stack([ids for _, ids in items], torch.long, PAD_ID),
            times=pad_stack([t for t, _ in items], torch.float32),
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "nested": self.nested}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.nested = bool(state["nested"])

    def _flat_unit(self, position: int, code: str) -> LongUnit:
        """One code per step: the step is the visit, the code its only position."""
        return position, 0, code, (position,)

    def from_events(self, events: EventRows) -> tuple[list[float], list[list[str]]]:
        """``(visit times since the start, codes per visit)``."""
        times = [float(events.visit_times[v] - events.start) for v in events.visits]
        return times, self._codes_by_visit(events)

    def event_steps(self, events: EventRows) -> list[tuple[Any, float]]:
        """The patient's visits and their times."""
        return [(v, float(events.visit_times[v])) for v in events.visits]

    def to_events(
        self, value: Any, key: str, patient_id: str, names: Sequence[str] | None = None
    ) -> Iterable[EventRow]:
        """One row per code at its step's time (the step's position without times)."""
        step_times, visits = value
        for t, visit in enumerate(visits):
            time = float(t) if step_times is None else float(step_times[t])
            for c in visit if isinstance(visit, (list, tuple)) else [visit]:
                yield f"{patient_id}-{t}", time, str(c), math.nan

"""Patients from files (JSON Lines samples or long-format event tables, by file extension),
and the sample sources of explain runs.

A :class:`SampleSource` (:class:`JsonlSource`, :class:`EventTableSource`, :class:`MedsSource`,
:class:`SamplesSource`, :class:`DatasetSource`) splits its input into independent units
(:meth:`SampleSource.shards`); each unit (:class:`SourceShard`) turns into a dataset with the
run's processors and :class:`SizeLimits` in the same way in any process.

Example:
    >>> samples = load_samples("patients.jsonl")
    >>> schema = {"diagnoses": "sequence", "procedures": "sequence", "drugs": "sequence"}
    >>> events = load_samples("events.parquet", input_schema=schema, labels="labels.csv",
    ...                       label_key="label")
    >>> samples[0]["diagnoses"][0], events[0]["diagnoses"][:2]   # visits, or codes in order
    (['D17.4', 'L61.6'], ['D17.4', 'L61.6'])
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.files import file_sha256
from ..core.ids import find_id_clash
from ..core.jsonl import iter_jsonl, plain_json, read_jsonl, read_jsonl_spans
from .dataset import (
    MAX_CODES_PER_STEP,
    MAX_STEPS,
    FittedSchema,
    SampleDataset,
    create_sample_dataset,
)
from .events import from_events
from .identity import (
    IDENTITY_COLUMNS,
    SAMPLE_IDENTITY,
    STEP_IDENTITY,
    STEPS_KEY,
    identity_columns,
)

JSONL_SUFFIXES = (".jsonl", ".ndjson")
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".gz")


def load_samples(
    path: str | os.PathLike,
    input_schema: Mapping[str, str] | None = None,
    *,
    labels: str | os.PathLike | None = None,
    label_key: str = "label",
    columns: Mapping[str, Sequence[str]] | None = None,
    on_bad_rows: str = "error",
    identity: bool = False,
) -> list[dict[str, Any]]:
    """Read samples from ``path``: ``.jsonl`` / ``.ndjson`` as they are, ``.parquet`` /
    ``.csv`` / ``.tsv`` as an event table (:func:`~ehrlens.data.events.from_events`).

    For event tables, ``input_schema`` says which features to build; labels come from the
    ``labels`` table, or from a ``label_key`` column of the events when it has one;
    ``identity`` keeps each step's ``visit_id`` and event time for the attribution rows.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown extension, unreadable file, or bad rows (with their numbers).

    Example:
        >>> schema = {"diagnoses": "nested_sequence", "procedures": "nested_sequence",
        ...           "drugs": "nested_sequence"}
        >>> samples = load_samples("events.parquet", schema, labels="labels.csv")
        >>> len(samples)
        130
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        if labels is not None:
            raise ValueError(f"{path}: JSON Lines samples carry their labels; drop --labels")
        return read_jsonl(path)
    if name.endswith(TABLE_SUFFIXES):
        if input_schema is None:
            raise ValueError(f"{path}: an event table needs an input_schema to build samples")
        label_column = None
        if labels is None:
            label_column = label_key if _has_column(path, label_key) else None
        return from_events(
            path,
            input_schema,
            labels=labels,
            label_key=label_key,
            label_column=label_column,
            columns=columns,
            on_bad_rows=on_bad_rows,
            identity=identity,
        )
    raise ValueError(
        f"{path}: unknown file type; expected JSON Lines ({', '.join(JSONL_SUFFIXES)}) or an "
        "event table (.parquet, .csv, .tsv)"
    )


def _has_column(path: Path, column: str) -> bool:
    from .events import read_table

    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            return column in pq.read_schema(path).names
        except Exception:
            return False
    try:
        return column in read_table(path).columns
    except (ValueError, OSError):
        return False


# --- Sample sources: the input of an explain run, in independent units of work -------------


@dataclass(frozen=True)
class SizeLimits:
    """The size limits every dataset of a run is built with, wherever it is built (see
    :func:`~ehrlens.data.create_sample_dataset`): ``max_steps`` per feature and
    ``max_codes_per_step``; ``None`` is no limit.

    Example:
        >>> SizeLimits(max_steps=None).as_kwargs()
        {'max_steps': None, 'max_codes_per_step': 1000}
    """

    max_steps: int | None = MAX_STEPS
    max_codes_per_step: int | None = MAX_CODES_PER_STEP

    def as_kwargs(self) -> dict[str, int | None]:
        return {"max_steps": self.max_steps, "max_codes_per_step": self.max_codes_per_step}


@dataclass(frozen=True)
class SourceShard(ABC):
    """One independent unit of work of a :class:`SampleSource` (a slice of samples, a range of
    JSON Lines, a MEDS data shard). Picklable, so that any process can build it.

    Attributes:
        index: the unit's number, which is also its output shard's number.
        patient_ids: the ids it is expected to hold, as the source knows them before reading
            the unit (in input order; sorted for MEDS): a written shard is verified by them.
    """

    index: int
    patient_ids: tuple[str, ...]

    @abstractmethod
    def samples(self) -> list[dict[str, Any]]:
        """The unit's samples, in input order."""

    def dataset(self, schema: FittedSchema, limits: SizeLimits) -> SampleDataset:
        """The unit's samples processed with ``schema`` under ``limits``.

        Raises:
            ValueError / TypeError: from the processors, prefixed with the unit's number and
                its first and last patient.
        """
        samples = self.samples() if self.patient_ids else []
        if not samples:  # e.g. a MEDS shard none of whose samples is selected
            return SampleDataset([], schema, has_labels=False)
        try:
            return create_sample_dataset(
                samples, schema=schema, max_steps=limits.max_steps,
                max_codes_per_step=limits.max_codes_per_step,
            )  # fmt: skip
        except (ValueError, TypeError) as error:
            first = samples[0].get("patient_id") if samples else None
            last = samples[-1].get("patient_id") if samples else None
            raise type(error)(
                f"shard {self.index} (patients {first} to {last}): {error}"
            ) from error


@dataclass(frozen=True)
class SamplesShard(SourceShard):
    """A unit that carries its samples (in-memory samples, an event table's patients)."""

    rows: tuple[dict[str, Any], ...]

    def samples(self) -> list[dict[str, Any]]:
        return list(self.rows)


@dataclass(frozen=True)
class DatasetShard(SourceShard):
    """A slice of an already processed :class:`~ehrlens.data.SampleDataset`."""

    source: SampleDataset
    start: int
    stop: int

    def samples(self) -> list[dict[str, Any]]:  # pragma: no cover - processed already
        raise TypeError("a processed dataset's shard has items, not samples; use dataset()")

    def dataset(self, schema: FittedSchema, limits: SizeLimits) -> SampleDataset:
        return self.source.subset(range(self.start, self.stop))


@dataclass(frozen=True)
class JsonlShard(SourceShard):
    """Lines of a JSON Lines file, read by byte span where the unit is built."""

    path: str
    spans: tuple[tuple[int, int, int], ...]  # (line number, start byte, end byte)

    def samples(self) -> list[dict[str, Any]]:
        return read_jsonl_spans(self.path, self.spans)


@dataclass(frozen=True)
class MedsShard(SourceShard):
    """One MEDS data shard, read with the model's feature mapping where the unit is built."""

    root: str
    labels: str
    options: Mapping[str, Any]
    label_key: str

    def samples(self) -> list[dict[str, Any]]:
        from .meds import MedsOptions, from_meds

        data = from_meds(
            self.root, self.labels, options=MedsOptions.from_dict(self.options),
            label_key=self.label_key, shards=[self.index],
        )  # fmt: skip
        keep = set(self.patient_ids)
        return [s for s in data.samples if s["patient_id"] in keep]


class SampleSource(ABC):
    """Where an explain run's patients come from: JSON Lines, an event table, a MEDS folder,
    samples or a processed dataset in memory.

    :meth:`shards` splits the input into independent units; each unit becomes samples and a
    dataset in the same way wherever it is built (this process or a Ray worker), with the
    run's processors and :class:`SizeLimits`.

    ``patients`` keeps only those patient ids (e.g. a model's recorded test split) and
    ``exclude`` drops some (e.g. every recorded one, for new patients).
    """

    patients: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    @abstractmethod
    def shards(self, shard_size: int) -> list[SourceShard]:
        """The units of work, in order (``shard_size`` patients each where the source can
        cut freely; one per data shard for MEDS).

        Raises:
            ValueError: unreadable input, two samples with one ``patient_id``, or no patient
                left after the selection.
        """

    @abstractmethod
    def digest(self) -> str:
        """16 hex digits identifying the input's content and selection (for the run's
        fingerprint)."""

    @abstractmethod
    def identity(self) -> list[str]:
        """The identity columns the run's rows carry (:mod:`ehrlens.data.identity`)."""

    def describe(self) -> dict[str, Any]:
        """The source as plain data, for the run's manifest."""
        return {"kind": type(self).__name__, "digest": self.digest()}

    def _selected(self, patient_id: str) -> bool:
        return (self.patients is None or patient_id in self._keep) and (
            patient_id not in self._drop
        )

    @property
    def _keep(self) -> frozenset[str]:
        return frozenset(self.patients or ())

    @property
    def _drop(self) -> frozenset[str]:
        return frozenset(self.exclude)

    def _selection_digest(self) -> str:
        text = json.dumps(
            [sorted(self.patients or []), self.patients is None, sorted(self.exclude)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    #: What the selection is, for the error when it leaves no patient.
    selection: str = "the chosen patients"

    def _check_some(self, n: int, where: str) -> None:
        if n == 0:
            raise ValueError(f"{where}: no patient to explain: none of {self.selection} is here")


def _slices(ids: Sequence[str], shard_size: int) -> list[tuple[int, int]]:
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [(start, min(start + shard_size, len(ids))) for start in range(0, len(ids), shard_size)]


def _unique_ids(samples: Sequence[Mapping[str, Any]], where: str) -> None:
    clash = find_id_clash(samples, strict=True)
    if clash is not None:
        raise ValueError(
            f"{where}: " + clash.describe(f"sample {clash.first}", f"sample {clash.second}")
        )


class SamplesSource(SampleSource):
    """Samples already in memory (dicts as :func:`~ehrlens.data.create_sample_dataset` takes).

    Example:
        >>> source = SamplesSource(cohort.samples)       # 130 patients
        >>> [len(s.patient_ids) for s in source.shards(100)]
        [100, 30]
        >>> len(SamplesSource(cohort.samples, exclude=["P000000"]).samples)
        129
    """

    def __init__(
        self,
        samples: Sequence[Mapping[str, Any]],
        patients: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        where: str = "samples",
        selection: str = SampleSource.selection,
    ) -> None:
        self.selection = selection
        self.patients = None if patients is None else tuple(str(p) for p in patients)
        self.exclude = tuple(str(p) for p in exclude)
        self.where = where
        self.samples = [dict(s) for s in samples if self._selected(str(s.get("patient_id")))]

    def shards(self, shard_size: int) -> list[SourceShard]:
        self._check_some(len(self.samples), self.where)
        _unique_ids(self.samples, self.where)
        ids = [str(s["patient_id"]) for s in self.samples]
        return [
            SamplesShard(i, tuple(ids[a:b]), tuple(self.samples[a:b]))
            for i, (a, b) in enumerate(_slices(ids, shard_size))
        ]

    def digest(self) -> str:
        text = "\n".join(json.dumps(plain_json(s), sort_keys=True) for s in self.samples)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def identity(self) -> list[str]:
        return sample_identity_columns(self.samples)


class DatasetSource(SampleSource):
    """A processed :class:`~ehrlens.data.SampleDataset` (its limits were applied when it was
    made); its fingerprint is :func:`dataset_fingerprint`.

    Example:
        >>> DatasetSource(dataset).shards(1000)[0].patient_ids[:2]
        ('P000000', 'P000001')
        >>> DatasetSource(dataset).digest() == dataset_fingerprint(dataset)
        True
    """

    def __init__(self, dataset: SampleDataset) -> None:
        _unique_ids(dataset.items, "dataset")
        self.dataset = dataset

    def shards(self, shard_size: int) -> list[SourceShard]:
        ids = [str(p) for p in self.dataset.patient_ids]
        return [
            DatasetShard(i, tuple(ids[a:b]), self.dataset, a, b)
            for i, (a, b) in enumerate(_slices(ids, shard_size))
        ]

    def digest(self) -> str:
        return dataset_fingerprint(self.dataset)

    def identity(self) -> list[str]:
        return identity_columns(self.dataset.items)


class JsonlSource(SampleSource):
    """A JSON Lines file. The file is scanned once here (validity, ids, identity); each unit
    reads only its own lines, by byte span, where it is built.

    Example:
        >>> shard = JsonlSource("patients.jsonl").shards(1000)[0]
        >>> shard.patient_ids[0], shard.spans[0][:2]     # (line number, start byte, end byte)
        ('P000000', (1, 0))
    """

    def __init__(
        self,
        path: str | os.PathLike,
        patients: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        selection: str = SampleSource.selection,
    ) -> None:
        self.selection = selection
        self.path = Path(path)
        self.patients = None if patients is None else tuple(str(p) for p in patients)
        self.exclude = tuple(str(p) for p in exclude)
        self._scan: tuple[list[str], list[tuple[int, int, int]], list[str]] | None = None

    def _scanned(self) -> tuple[list[str], list[tuple[int, int, int]], list[str]]:
        if self._scan is None:
            ids, raw, spans, heads, lines = [], [], [], [], []
            for number, (start, end), sample in iter_jsonl(self.path):
                if "patient_id" not in sample:
                    raise ValueError(f"{self.path}:{number}: the sample has no patient_id")
                lines.append(number)
                pid = str(sample["patient_id"])
                if not self._selected(pid):
                    continue
                ids.append(pid)
                raw.append({"patient_id": sample["patient_id"]})
                spans.append((number, start, end))
                heads.append(_identity_head(sample))
            if not lines:
                raise ValueError(f"{self.path}: no samples (the file is empty)")
            self._check_some(len(ids), str(self.path))
            clash = find_id_clash(raw, strict=True)  # 7 and "7" clash as text
            if clash is not None:
                first, second = spans[clash.first][0], spans[clash.second][0]
                raise ValueError(
                    f"{self.path}:{second}: " + clash.describe(f"line {first}", f"line {second}")
                )
            self._scan = ids, spans, sample_identity_columns(heads)
        return self._scan

    def shards(self, shard_size: int) -> list[SourceShard]:
        ids, spans, _ = self._scanned()
        return [
            JsonlShard(i, tuple(ids[a:b]), str(self.path), tuple(spans[a:b]))
            for i, (a, b) in enumerate(_slices(ids, shard_size))
        ]

    def digest(self) -> str:
        text = f"{file_sha256(self.path)}:{self._selection_digest()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def identity(self) -> list[str]:
        return self._scanned()[2]


class EventTableSource(SamplesSource):
    """A long-format event table (``.parquet`` / ``.csv`` / ``.tsv``), turned into samples
    here (building a patient needs the table's row order), with each step's identity.

    Example:
        >>> schema = json.loads(Path("schema.json").read_text())["input_schema"]
        >>> source = EventTableSource("events.parquet", schema, labels="labels.csv")
        >>> [len(s.patient_ids) for s in source.shards(100)], source.identity()
        ([100, 30], ['visit_id', 'event_time'])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        input_schema: Mapping[str, str],
        *,
        labels: str | os.PathLike | None = None,
        label_key: str = "label",
        columns: Mapping[str, Sequence[str]] | None = None,
        on_bad_rows: str = "error",
        patients: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        selection: str = SampleSource.selection,
    ) -> None:
        self.path = Path(path)
        self.labels = None if labels is None else Path(labels)
        self.options = {"label_key": label_key, "columns": columns, "on_bad_rows": on_bad_rows}
        samples = load_samples(
            path, input_schema, labels=labels, label_key=label_key, columns=columns,
            on_bad_rows=on_bad_rows, identity=True,
        )  # fmt: skip
        super().__init__(samples, patients, exclude, where=str(path), selection=selection)

    def digest(self) -> str:
        files = [file_sha256(self.path)]
        if self.labels is not None:
            files.append(file_sha256(self.labels))
        text = json.dumps([files, plain_json(self.options), self._selection_digest()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class MedsSource(SampleSource):
    """A MEDS folder and its task labels, read with a model's feature mapping
    (:class:`~ehrlens.data.meds.MedsOptions`): one unit per data shard. Here only the shards'
    ``subject_id`` columns and the labels are read (:func:`~ehrlens.data.meds.shard_sample_ids`);
    each unit reads its own shard where it is built.

    Example:
        A tiny MEDS folder: three subjects, one per data shard, each labelled once.

        >>> import pyarrow as pa
        >>> from datetime import datetime
        >>> Path("meds/data").mkdir(parents=True)
        >>> for i, subject in enumerate([7, 8, 9]):
        ...     events = pa.table({
        ...         "subject_id": pa.array([subject, subject], pa.int64()),
        ...         "time": pa.array([None, datetime(2020, 1, 1)], pa.timestamp("us")),
        ...         "code": ["SEX//F", "ICD10CM//I10"],
        ...         "numeric_value": pa.array([None, None], pa.float32()),
        ...     })
        ...     pq.write_table(events, f"meds/data/{i}.parquet")
        >>> pq.write_table(pa.table({
        ...     "subject_id": pa.array([7, 8, 9], pa.int64()),
        ...     "prediction_time": pa.array([datetime(2020, 1, 2)] * 3, pa.timestamp("us")),
        ...     "boolean_value": [True, False, True],
        ... }), "labels.parquet")
        >>> options = {"features": {"diagnoses": ["ICD10CM"]}}   # as a model card records them
        >>> source = MedsSource("meds/", "labels.parquet", options)
        >>> [s.index for s in source.shards(1000)]     # shard_size does not apply
        [0, 1, 2]
        >>> source.shards(1000)[0].patient_ids
        ('7@2020-01-02T00:00:00',)
    """

    #: The identity columns of MEDS rows (every shard writes them, even an empty one).
    IDENTITY = ("subject_id", "prediction_time", "event_time")

    def __init__(
        self,
        root: str | os.PathLike,
        labels: str | os.PathLike,
        options: Mapping[str, Any],
        label_key: str = "label",
        patients: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        selection: str = SampleSource.selection,
    ) -> None:
        from .meds import MedsOptions

        self.selection = selection
        self.root = Path(root)
        self.labels = Path(labels)
        self.options = MedsOptions.from_dict(options).to_dict()
        self.label_key = label_key
        self.patients = None if patients is None else tuple(str(p) for p in patients)
        self.exclude = tuple(str(p) for p in exclude)

    def _selected(self, patient_id: str) -> bool:
        # A MEDS sample is "<subject_id>@<prediction time>": an excluded sample (a recorded
        # training one, for --split new) excludes its subject at every prediction time.
        subject = patient_id.split("@", 1)[0]
        return super()._selected(patient_id) and subject not in self._drop_subjects

    @property
    def _drop_subjects(self) -> frozenset[str]:
        return frozenset(p.split("@", 1)[0] for p in self.exclude)

    def shards(self, shard_size: int) -> list[SourceShard]:
        from .meds import shard_sample_ids

        expected = [
            [p for p in ids if self._selected(p)]
            for ids in shard_sample_ids(self.root, self.labels)
        ]
        self._check_some(sum(map(len, expected)), str(self.root))
        return [
            MedsShard(i, tuple(ids), str(self.root), str(self.labels), self.options, self.label_key)
            for i, ids in enumerate(expected)
        ]

    def digest(self) -> str:
        from .meds import meds_digest

        text = json.dumps(
            [meds_digest(self.root, self.labels), plain_json(self.options), self.label_key,
             self._selection_digest()]
        )  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def identity(self) -> list[str]:
        return list(self.IDENTITY)


def _identity_head(sample: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`sample_identity_columns` reads of a sample (not its features)."""
    head = {k: sample[k] for k in SAMPLE_IDENTITY if k in sample}
    if STEPS_KEY in sample:
        head[STEPS_KEY] = sample[STEPS_KEY]
    return head


def sample_identity_columns(samples: Iterable[Mapping[str, Any]]) -> list[str]:
    """The identity columns the rows of raw ``samples`` carry, in
    :data:`~ehrlens.data.identity.IDENTITY_COLUMNS` order (as
    :func:`~ehrlens.data.identity.identity_columns` says of the processed items).

    Example:
        >>> sample_identity_columns([{"patient_id": "p", "subject_id": 7}])
        ['subject_id']
    """
    present: set[str] = set()
    for sample in samples:
        present.update(k for k in SAMPLE_IDENTITY if sample.get(k) is not None)
        steps = sample.get(STEPS_KEY)
        if isinstance(steps, Mapping):
            for columns in steps.values():
                if isinstance(columns, Mapping):
                    present.update(k for k in STEP_IDENTITY if columns.get(k) is not None)
    return [name for name in IDENTITY_COLUMNS if name in present]


def _hash_value(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(value, Mapping):
        for key in sorted(value):
            digest.update(str(key).encode())
            _hash_value(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _hash_value(digest, item)
    else:
        digest.update(repr(value).encode())


def dataset_fingerprint(dataset: SampleDataset) -> str:
    """16 hex digits of a SHA-256 over every patient's id and processed features.

    Example:
        >>> len(dataset_fingerprint(dataset))
        16
    """
    digest = hashlib.sha256()
    for index in range(len(dataset)):
        item = dataset[index]
        _hash_value(digest, {k: v for k, v in item.items() if k in dataset.feature_keys})
        digest.update(str(item["patient_id"]).encode())
    return digest.hexdigest()[:16]

"""Long-format event tables (one row per coded event, as in a MIMIC or OMOP export) -> samples.

An event table has one row per event with the columns

    patient_id, visit_id (optional), time, feature, code[, value]

``feature`` names the sample key the event belongs to (e.g. ``"diagnoses"``), ``code`` the code
(or, for numeric features, the measurement's name) and ``value`` the number for
``"timeseries"`` and ``"tensor"`` features. :func:`from_events` turns such a table into the
sample dicts that :func:`~ehrlens.data.create_sample_dataset` takes; :func:`to_events` does the
reverse. Each feature's processor builds its value from its rows and writes them back
(``event_kind``, ``from_events``, ``to_events``). Reading uses pyarrow (extra
``ehrlens[parquet]``).

Rules, so that nothing is lost without a count:

- Rows are numbered from 1 (first data row; the header is not counted).
- A row with no patient id, no feature, no code, an unparsable time, or (numeric features) an
  unparsable value is *bad*. ``on_bad_rows="error"`` (default) raises a :class:`ValueError`
  that counts them by reason and lists their row numbers; ``"skip"`` drops them and says the
  same in an :class:`EventTableWarning`.
- Rows whose feature is not in ``input_schema`` are ignored and counted in a warning.
- Times are numbers (any unit, kept as they are) or dates/timestamps (converted to
  ``time_unit`` since the patient's first event). Within a patient, events are ordered by time,
  then by row.
- Visits are ``visit_id`` groups (or, without that column, distinct times), ordered by their
  earliest event. Every nested feature of a patient has one entry per visit of that patient,
  empty where the feature has no code in that visit, so features stay aligned.

Example:
    >>> schema = {"diagnoses": "nested_sequence", "procedures": "nested_sequence",
    ...           "drugs": "nested_sequence"}
    >>> samples = from_events("events.parquet", schema, labels="labels.csv", label_key="label")
    >>> dataset = create_sample_dataset(samples, schema, {"label": "binary"})
    >>> len(dataset), samples[0]["diagnoses"][0]
    (130, ['D17.4', 'L61.6'])
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.ids import find_id_collision
from .processors import FEATURE_PROCESSORS, RESERVED_CODES, EventRows, FeatureProcessor
from .processors.codes import NestedSequenceProcessor, SequenceProcessor, StageNetProcessor

EVENT_COLUMNS = ("patient_id", "visit_id", "time", "feature", "code", "value")
REQUIRED_COLUMNS = ("patient_id", "time", "feature", "code")
TIME_UNITS = {"days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}
_SHOWN_ROWS = 10


class EventTableWarning(UserWarning):
    """Rows of an event table were skipped or ignored; the message says how many and why."""


def _require_pandas():
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "reading event tables needs pyarrow and pandas: pip install 'ehrlens[parquet]'"
        ) from error
    return pd


def read_table(source: Any):
    """Read a Parquet or CSV file, a pyarrow Table or a pandas DataFrame as a DataFrame.

    CSV columns are read as text and parsed afterwards, so one malformed cell becomes a
    numbered bad row instead of a failed read.

    Example:
        >>> frame = read_table("labels.csv")   # every column as text, parsed later
        >>> frame.iloc[0].tolist()
        ['P000000', '0']
    """
    pd = _require_pandas()
    import pyarrow as pa

    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    if isinstance(source, pa.Table):
        return source.to_pandas()
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "expected a path to a .parquet or .csv file, a pyarrow Table or a pandas "
            f"DataFrame, got {type(source).__name__}"
        )
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pandas()
        if suffixes.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            import pyarrow.csv as pacsv

            delimiter = "\t" if ".tsv" in suffixes else ","
            columns = _csv_header(path, delimiter)
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in columns},
                    strings_can_be_null=True,
                ),
            )
            return table.to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable table ({error})") from error
    raise ValueError(f"{path}: unknown table format; expected .parquet, .pq, .csv or .tsv")


def _csv_header(path: Path, delimiter: str) -> list[str]:
    import csv
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as f:  # the names pyarrow sees
        return next(csv.reader(f, delimiter=delimiter), [])


def _missing(values: Any) -> np.ndarray:
    """True where a cell is empty: null, NaN or a blank string."""
    pd = _require_pandas()
    series = pd.Series(values)
    empty = series.isna().to_numpy()
    text = series.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
    return empty | text


def _as_text(series: Any) -> Any:
    return series.map(lambda v: v if isinstance(v, str) else (None if _is_null(v) else str(v)))


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):
        return False


BAD_TIME = "unparsable or missing time"
DATE_AMONG_NUMBERS = "a date among numeric times"
NUMBER_AMONG_DATES = "a number among dates"
YEAR_OUT_OF_RANGE = "a date outside years 1-9999 (year 0 or before has no calendar date)"
#: The earliest date a row may hold (Python's dates start at year 1).
FIRST_DATE = np.datetime64("0001-01-01T00:00:00", "us")


def _parse_times(series: Any, time_unit: str) -> tuple[np.ndarray, dict[str, np.ndarray], bool]:
    """Times as float64 (NaN where unparsable), bad-row masks by reason, and whether they are
    dates.

    A text column holding both numbers and dates is read the way that leaves fewer bad rows;
    the rows of the other kind are then bad, under their own reason.
    """
    pd = _require_pandas()
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, {BAD_TIME: ~np.isfinite(values)}, False
    if pd.api.types.is_datetime64_any_dtype(series):
        seconds, early = _seconds(pd.to_datetime(series, utc=True), time_unit)
        return seconds, {BAD_TIME: ~np.isfinite(seconds) & ~early, YEAR_OUT_OF_RANGE: early}, True
    text = _as_text(series)
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    as_number = np.isfinite(numbers)
    present = text.notna().to_numpy()
    if as_number[present].all() and present.any():
        return numbers, {BAD_TIME: ~as_number}, False
    stamps = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    seconds, early = _seconds(stamps, time_unit)
    as_date = np.isfinite(seconds) | early
    # Numbers when they leave fewer bad rows; on a tie, numbers only if no other cell is a
    # date (one malformed cell must not turn every numeric time into a date, nor the reverse).
    numeric = as_number.sum() > as_date.sum() or (
        as_number.sum() == as_date.sum() and as_number.any() and not (as_date & ~as_number).any()
    )
    if numeric:
        odd = as_date & ~as_number
        return numbers, {BAD_TIME: ~as_number & ~odd, DATE_AMONG_NUMBERS: odd}, False
    odd = as_number & ~as_date
    reasons = {BAD_TIME: ~as_date & ~odd, NUMBER_AMONG_DATES: odd, YEAR_OUT_OF_RANGE: early}
    return seconds, reasons, True


def _seconds(stamps: Any, time_unit: str) -> tuple[np.ndarray, np.ndarray]:
    """UTC timestamps as ``time_unit`` since the epoch (NaN at NaT), computed in microseconds:
    no nanosecond overflow for far dates such as 9999-12-31; and which are before year 1
    (``0000-01-01`` parses, but has no Python date): those are NaN too."""
    micros = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    missing = np.isnat(micros)
    early = ~missing & (micros < FIRST_DATE)
    out = micros.astype(np.int64).astype(np.float64) / 1e6 / TIME_UNITS[time_unit]
    out[missing | early] = np.nan
    return out, early


def _parse_values(series: Any) -> np.ndarray:
    pd = _require_pandas()
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(_as_text(series), errors="coerce").to_numpy(dtype=np.float64)


def _row_list(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r) + 1) for r in rows[:_SHOWN_ROWS])
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    return f"rows {shown}{more}"


def from_events(
    events: Any,
    input_schema: Mapping[str, str],
    *,
    labels: Any = None,
    label_key: str = "label",
    label_column: str | None = None,
    time_unit: str = "days",
    columns: Mapping[str, Sequence[str]] | None = None,
    on_bad_rows: str = "error",
    identity: bool = False,
) -> list[dict[str, Any]]:
    """Build one sample per patient from a long-format event table.

    Args:
        events: path to a ``.parquet`` / ``.csv`` / ``.tsv`` file, a pyarrow Table or a pandas
            DataFrame with columns ``patient_id, time, feature, code`` and optionally
            ``visit_id`` and ``value``.
        input_schema: ``{feature: schema string}``; the features to build.
        labels: optional table (same kinds as ``events``) with columns ``patient_id`` and
            ``label_key``. Every patient with events must have a label.
        label_key: the label's key in each sample (and its column in ``labels``).
        label_column: alternatively, a column of ``events`` holding each patient's label (it
            must not vary within a patient).
        time_unit: unit for times given as dates: ``"days"``, ``"hours"``, ``"minutes"`` or
            ``"seconds"`` since the patient's first event. Numeric times are kept as given.
        columns: for ``"timeseries"`` and ``"tensor"`` features, the measurement names in
            column order, e.g. ``{"labs": ["glucose", "sodium"]}``; by default the names seen
            in the table, sorted (numeric names by value: ``"2"`` before ``"10"``).
        on_bad_rows: ``"error"`` or ``"skip"`` (drop them, with a warning that counts them).
        identity: also give each sample ``"step_identity"``: per feature, each step's ``visit_id``
            (None where the table has none) and event time (a ``datetime`` for dates, the
            number as given otherwise), which attribution rows then carry (see
            :func:`build_samples`).

    Returns:
        A list of sample dicts, patients in order of their first row.

    Raises:
        ValueError: missing columns, bad rows (with ``on_bad_rows="error"``), a patient without
            a label, a label that varies within a patient, or a ``"tensor"`` feature missing a
            measurement for a patient or giving one twice. Messages give row numbers or
            patient ids.

    Example:
        >>> table = pd.DataFrame({
        ...     "patient_id": ["p1"] * 4, "time": [0.0, 1.0, 0.0, 1.0],
        ...     "feature": ["diagnoses", "diagnoses", "labs", "labs"],
        ...     "code": ["I10", "E11.9", "hba1c", "hba1c"], "value": [None, None, 7.1, 6.8],
        ...     "label": [1, 1, 1, 1]})
        >>> samples = from_events(table, {"diagnoses": "sequence", "labs": "timeseries"},
        ...                       label_column="label")
        >>> samples[0]["diagnoses"]
        ['I10', 'E11.9']
    """
    pd = _require_pandas()
    if on_bad_rows not in ("error", "skip"):
        raise ValueError(f"on_bad_rows must be 'error' or 'skip', got {on_bad_rows!r}")
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {sorted(TIME_UNITS)}, got {time_unit!r}")
    processors = {key: _event_processor(key, schema) for key, schema in input_schema.items()}
    kinds = {key: processor.event_kind for key, processor in processors.items()}
    table = read_table(events)
    missing_columns = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if label_column is not None and label_column not in table.columns:
        missing_columns.append(label_column)
    needs_values = "measurements" in kinds.values()
    if needs_values and "value" not in table.columns:
        missing_columns.append("value")
    if missing_columns:
        raise ValueError(
            f"event table lacks column(s) {missing_columns}; it has {list(table.columns)} "
            f"(expected {', '.join(EVENT_COLUMNS)})"
        )
    n_rows = len(table)
    _check_id_collisions(table["patient_id"], "event table")
    patient = _as_text(table["patient_id"])
    feature = _as_text(table["feature"])
    code = _as_text(table["code"])
    times, time_reasons, dated = _parse_times(table["time"], time_unit)
    has_visits = "visit_id" in table.columns
    visit = _as_text(table["visit_id"]) if has_visits else None

    known = feature.isin(list(input_schema)).to_numpy()
    numeric_row = feature.map(lambda f: kinds.get(f) == "measurements").to_numpy(bool)
    reserved = known & ~numeric_row & code.isin(sorted(RESERVED_CODES)).to_numpy(bool)
    values = _parse_values(table["value"]) if "value" in table.columns else np.full(n_rows, np.nan)
    reasons = {
        "no patient_id": _missing(patient),
        "no feature": _missing(feature),
        "no code": _missing(code),
        f"reserved code ({', '.join(sorted(RESERVED_CODES))})": reserved,
        **time_reasons,
        "unparsable or missing value (numeric feature)": known & numeric_row & ~np.isfinite(values),
    }
    bad = np.zeros(n_rows, dtype=bool)
    for mask in reasons.values():
        bad |= mask
    if bad.any():
        detail = "; ".join(
            f"{reason}: {mask.sum()} ({_row_list(np.flatnonzero(mask))})"
            for reason, mask in reasons.items()
            if mask.any()
        )
        message = f"event table: {bad.sum()} bad row(s) of {n_rows} — {detail}"
        if on_bad_rows == "error":
            raise ValueError(message + " (pass on_bad_rows='skip' to drop them)")
        warnings.warn(message + "; skipped", EventTableWarning, stacklevel=2)
    unknown = ~bad & ~known
    if unknown.any():
        names = sorted(set(feature[unknown]))
        warnings.warn(
            f"event table: ignored {unknown.sum()} row(s) of feature(s) not in input_schema: "
            f"{names[:_SHOWN_ROWS]}",
            EventTableWarning,
            stacklevel=2,
        )
    keep = ~bad & known
    frame = pd.DataFrame(
        {
            "row": np.arange(n_rows)[keep],
            "patient_id": patient[keep].to_numpy(),
            "visit": _visit_keys(visit, times)[keep],
            "visit_id": _given_visit_ids(visit, n_rows)[keep],
            "time": times[keep],
            "stamp": times[keep],
            "feature": feature[keep].to_numpy(),
            "code": code[keep].to_numpy(),
            "value": values[keep],
        }
    )
    if dated:
        frame["stamp"] = _stamps(frame["time"], time_unit)
    patient_labels = _labels(table, patient, keep, labels, label_key, label_column)
    samples = build_samples(
        frame, processors, columns=columns, labels=patient_labels, label_key=label_key,
        dated=dated, identity=identity,
    )  # fmt: skip
    if patient_labels is not None:
        without_events = set(patient_labels) - {s["patient_id"] for s in samples}
        if without_events:
            warnings.warn(
                f"labels: {len(without_events)} labelled patient(s) have no usable events and "
                f"were left out, e.g. {sorted(without_events)[:_SHOWN_ROWS]}",
                EventTableWarning,
                stacklevel=2,
            )
    if not samples:
        raise ValueError("event table: no usable rows for the features in input_schema")
    return samples


def build_samples(
    frame: Any,
    processors: Mapping[str, FeatureProcessor],
    *,
    columns: Mapping[str, Sequence[str]] | None = None,
    labels: Mapping[str, Any] | None = None,
    label_key: str = "label",
    dated: bool = False,
    identity: bool = True,
) -> list[dict[str, Any]]:
    """Samples from checked event rows: the step shared by every reader of events.

    Args:
        frame: a pandas DataFrame with one row per usable event and the columns ``row``
            (position in the source, for order and messages), ``patient_id``, ``visit`` (the
            visit key), ``visit_id`` (the source's visit id, or None), ``time`` (float),
            ``stamp`` (the event's original time, for the rows' identity), ``feature``,
            ``code`` and ``value``.
        processors: ``{feature: processor}`` of the features to build.
        columns: measurement names per numeric feature (default: the names seen, sorted).
        labels: ``{patient_id: label}``; every patient must have one.
        label_key: the label's key in each sample.
        dated: times are dates, so each patient's time origin is its first event.
        identity: add the steps' identity (below).

    Returns:
        One sample per patient, in order of the patient's first row; with ``identity`` each
        carries ``sample["step_identity"][feature] = {"visit_id": [...], "event_time":
        [...]}``, one entry per step of the feature's value, for features whose processor has
        steps (:meth:`~ehrlens.data.processors.FeatureProcessor.event_steps`).

    Example:
        >>> from ehrlens.data.processors import NestedSequenceProcessor
        >>> frame = pd.DataFrame({
        ...     "row": [2, 3], "patient_id": ["p1", "p1"], "visit": ["v1", "v2"],
        ...     "visit_id": ["v1", "v2"], "time": [0.0, 3.0], "stamp": [0.0, 3.0],
        ...     "feature": ["dx", "dx"], "code": ["I10", "E11"], "value": [None, None]})
        >>> samples = build_samples(frame, {"dx": NestedSequenceProcessor()}, dated=True)
        >>> samples[0]["dx"]
        [['I10'], ['E11']]
    """
    pd = _require_pandas()
    kinds = {key: processor.event_kind for key, processor in processors.items()}
    frame = frame.sort_values(["time", "row"], kind="stable")
    measurement_names = _measurement_names(frame, kinds, columns)
    code_features = {k for k, kind in kinds.items() if kind == "codes"}
    keys = list(processors)
    # One stable sort groups the rows by patient (patients in order of their first row), and
    # a second by patient and feature; both keep the (time, row) order within a group. Each
    # patient and feature is then a slice of plain columns: no per-patient pandas work.
    order = pd.unique(frame.sort_values("row", kind="stable")["patient_id"])
    patient = pd.Categorical(frame["patient_id"], categories=order).codes.astype(np.int64)
    feature = pd.Categorical(frame["feature"], categories=keys).codes.astype(np.int64)
    by_patient = np.argsort(patient, kind="stable")
    by_feature = np.argsort(patient * (len(keys) + 1) + feature, kind="stable")
    names = ["row", "patient_id", "visit", "visit_id", "time", "stamp", "feature", "code", "value"]
    names = [n for n in names if n in frame.columns]
    plain = {n: _column_values(frame[n]) for n in names}
    first = _Columns({n: v[by_patient] for n, v in plain.items()})
    second = _Columns({n: v[by_feature] for n, v in plain.items()})
    counts = np.bincount(patient, minlength=len(order))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    first_times = plain["time"][by_patient][bounds[:-1]] if len(order) else np.array([])
    pair = (patient * (len(keys) + 1) + feature)[by_feature]
    wanted = np.arange(len(order))[:, None] * (len(keys) + 1) + np.arange(len(keys))[None, :]
    pair_start = np.searchsorted(pair, wanted, side="left")
    pair_stop = np.searchsorted(pair, wanted, side="right")
    light = {k for k, p in processors.items() if type(p) in _COLUMN_PROCESSORS}
    samples = []
    for number, pid in enumerate(order.tolist()):
        rows = first.slice(int(bounds[number]), int(bounds[number + 1]))
        sample: dict[str, Any] = {"patient_id": pid}
        start = float(first_times[number]) if dated else 0.0  # rows are in time order
        # rows are in (time, row) order: a visit's first code row is its earliest
        visit_time: dict[Any, float] = {}
        for feature_name, visit, time in zip(
            rows["feature"].tolist(), rows["visit"].tolist(), rows["time"].tolist(), strict=True
        ):
            if feature_name in code_features and visit not in visit_time:
                visit_time[visit] = time
        visit_order = list(visit_time)
        identity_of = _step_identity(rows) if identity else None
        steps: dict[str, dict[str, list]] = {}
        for index, (key, processor) in enumerate(processors.items()):
            part = second.slice(int(pair_start[number, index]), int(pair_stop[number, index]))
            events = EventRows(
                key=key,
                patient_id=pid,
                rows=part if key in light else part.frame(),
                visits=visit_order,
                visit_times=visit_time,
                start=start,
                names=measurement_names.get(key),
            )
            sample[key] = processor.from_events(events)
            keyed = None if identity_of is None else processor.event_steps(events)
            if identity_of is not None and keyed is not None:
                steps[key] = identity_of(keyed)
        if steps:
            sample["step_identity"] = steps
        if labels is not None:
            if pid not in labels:
                raise ValueError(f"patient '{pid}': no label '{label_key}' in the labels table")
            sample[label_key] = labels[pid]
        samples.append(sample)
    return samples


def _column_values(series: Any) -> np.ndarray:
    """A column as a numpy array whose ``tolist()`` gives what ``Series.tolist()`` gives
    (timestamps stay pandas Timestamps, not integers)."""
    pd = _require_pandas()
    if pd.api.types.is_datetime64_any_dtype(series) or isinstance(
        series.dtype, pd.CategoricalDtype
    ):
        return series.to_numpy(dtype=object)
    return series.to_numpy()


#: Processors that read event rows only through ``rows[name].tolist()`` and iteration, so
#: they get plain column slices instead of a DataFrame per patient (subclasses get one).
_COLUMN_PROCESSORS = (SequenceProcessor, NestedSequenceProcessor, StageNetProcessor)


class _Column:
    """One column of :class:`_Columns`: iterates and lists like a pandas Series."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def tolist(self) -> list:
        return self.values.tolist()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values.tolist())

    def __len__(self) -> int:
        return len(self.values)


class _Columns:
    """Rows ``start:stop`` of an event table held as plain numpy columns, sliced without
    pandas and only when a column is read: what the built-in code processors read
    (``rows[name].tolist()``, iteration); ``frame()`` gives a pandas DataFrame for every
    other processor."""

    __slots__ = ("columns", "start", "stop")

    def __init__(self, columns: dict[str, np.ndarray], start: int = 0, stop: int = -1) -> None:
        self.columns = columns
        self.start = start
        self.stop = len(next(iter(columns.values()))) if stop < 0 and columns else stop

    def slice(self, start: int, stop: int) -> _Columns:
        return _Columns(self.columns, self.start + start, self.start + stop)

    def __getitem__(self, name: str) -> _Column:
        return _Column(self.columns[name][self.start : self.stop])

    def __len__(self) -> int:
        return self.stop - self.start

    def frame(self) -> Any:
        pd = _require_pandas()
        return pd.DataFrame({n: v[self.start : self.stop] for n, v in self.columns.items()})


def _step_identity(rows: Any) -> Any:
    """A function: ``[(visit key, time)]`` -> ``{"visit_id": [...], "event_time": [...]}``.

    ``rows`` are one patient's rows in time order. A step of a visit gets the visit's source
    id and its earliest original time; a step without a visit gets the earliest original
    time of its events."""
    visit_ids: dict[Any, Any] = {}
    visit_stamps: dict[Any, Any] = {}
    time_stamps: dict[float, Any] = {}
    columns = (rows["visit"].tolist(), rows["visit_id"].tolist(), rows["stamp"].tolist())
    for visit, time, given, stamp in zip(
        columns[0], rows["time"].tolist(), columns[1], columns[2], strict=True
    ):
        if visit_ids.get(visit) is None and not _is_null(given):
            visit_ids[visit] = given
        if not _is_null(stamp):
            visit_stamps.setdefault(visit, stamp)
            time_stamps.setdefault(time, stamp)

    def identity(keyed: list[tuple[Any, float]]) -> dict[str, list]:
        ids, stamps = [], []
        for visit, time in keyed:
            ids.append(None if visit is None else _plain_id(visit_ids.get(visit)))
            stamp = visit_stamps.get(visit) if visit is not None else time_stamps.get(time)
            stamps.append(_plain_stamp(stamp))
        return {"visit_id": ids, "event_time": stamps}

    return identity


def _plain_id(value: Any) -> str | None:
    return None if value is None or _is_null(value) else str(value)


def _plain_stamp(value: Any) -> Any:
    """A time as a ``datetime`` (dates) or a ``float`` (numbers); None where absent."""
    if value is None or _is_null(value):
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[us]").item()
    return float(value)


def _given_visit_ids(visit: Any, n_rows: int) -> np.ndarray:
    """Each row's own ``visit_id`` (None where the table has none)."""
    if visit is None:
        return np.full(n_rows, None, dtype=object)
    ids = np.array(visit.to_numpy(dtype=object), dtype=object)
    ids[_missing(visit)] = None
    return ids


def _stamps(times: Any, time_unit: str) -> Any:
    """Times in ``time_unit`` since the epoch -> timestamps (microseconds)."""
    pd = _require_pandas()
    micros = np.round(np.asarray(times, dtype=np.float64) * TIME_UNITS[time_unit] * 1e6)
    return pd.to_datetime(micros.astype(np.int64), unit="us")


def _event_processor(key: str, schema: Any) -> FeatureProcessor:
    """A processor of ``schema`` that builds its feature from event rows, or a ValueError."""
    cls = FEATURE_PROCESSORS.get(schema) if isinstance(schema, str) else None
    if cls is None or cls.event_kind is None:
        buildable = sorted(s for s, c in FEATURE_PROCESSORS.items() if c.event_kind is not None)
        raise ValueError(
            f"feature '{key}': schema {schema!r} cannot be built from events; expected "
            f"one of {buildable}"
        )
    return cls()


def _check_id_collisions(ids: Any, what: str) -> None:
    """Refuse a patient_id column where two different values are one id as text (``7`` and
    ``"7"`` in one column of mixed types), naming both rows."""
    pd = _require_pandas()
    one_kind = {"string", "integer", "floating", "mixed-integer-float", "decimal", "empty"}
    if ids.dtype != object or pd.api.types.infer_dtype(ids, skipna=True) in one_kind:
        return  # all numbers or all text: no two values share a text
    clash = find_id_collision(None if _is_null(v) else v for v in ids)
    if clash is not None:
        raise ValueError(
            f"{what}: " + clash.describe(f"row {clash.first + 1}", f"row {clash.second + 1}")
        )


def _name_order(name: str) -> tuple:
    """Sort key for measurement names: numbers by value ("2" before "10"), then text."""
    try:
        return (0, float(name), "")
    except ValueError:
        return (1, 0.0, name)


def _visit_keys(visit: Any, times: np.ndarray) -> np.ndarray:
    """Each row's visit: its ``visit_id``, or its time where the id is absent or empty."""
    by_time = np.array([f"@{t!r}" for t in times], dtype=object)
    if visit is None:
        return by_time
    return np.where(_missing(visit), by_time, visit.to_numpy(dtype=object))


def _measurement_names(
    frame: Any, kinds: Mapping[str, str | None], columns: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    names = {}
    for key, kind in kinds.items():
        if kind != "measurements":
            continue
        seen = sorted(set(frame.loc[frame["feature"] == key, "code"]), key=_name_order)
        given = None if columns is None else columns.get(key)
        if given is None:
            names[key] = seen
            continue
        unknown = sorted(set(seen) - set(given))
        if unknown:
            raise ValueError(
                f"feature '{key}': measurement(s) {unknown[:_SHOWN_ROWS]} are not in the given "
                f"columns {list(given)}"
            )
        names[key] = list(given)
    return names


def _labels(
    table: Any,
    patient: Any,
    keep: np.ndarray,
    labels: Any,
    label_key: str,
    label_column: str | None,
) -> dict[str, Any] | None:
    pd = _require_pandas()
    if labels is not None and label_column is not None:
        raise ValueError("give labels= or label_column=, not both")
    if label_column is not None:
        frame = pd.DataFrame({"patient_id": patient[keep], "label": table[label_column][keep]})
    elif labels is not None:
        label_table = read_table(labels)
        missing = [c for c in ("patient_id", label_key) if c not in label_table.columns]
        if missing:
            raise ValueError(
                f"labels table lacks column(s) {missing}; it has {list(label_table.columns)}"
            )
        _check_id_collisions(label_table["patient_id"], "labels table")
        frame = pd.DataFrame(
            {"patient_id": _as_text(label_table["patient_id"]), "label": label_table[label_key]}
        )
        empty = _missing(frame["patient_id"]) | frame["label"].isna().to_numpy()
        if empty.any():
            raise ValueError(
                f"labels table: {empty.sum()} row(s) without a patient_id or a "
                f"'{label_key}' ({_row_list(np.flatnonzero(empty))})"
            )
    else:
        return None
    out: dict[str, Any] = {}
    for pid, label in zip(frame["patient_id"], frame["label"], strict=True):
        label = _plain(label)
        if pid in out and out[pid] != label:
            raise ValueError(
                f"patient '{pid}': label '{label_key}' varies ({out[pid]!r} and {label!r})"
            )
        out[pid] = label
    return out


def _plain(value: Any) -> Any:
    """numpy / text scalars -> Python numbers where they are numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() else number
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def to_events(
    samples: Sequence[Mapping[str, Any]],
    input_schema: Mapping[str, str],
    *,
    columns: Mapping[str, Sequence[str]] | None = None,
) -> Any:
    """Write samples as a long-format event table (pandas DataFrame); :func:`from_events` reads
    it back to the same samples.

    Steps without times (``"sequence"``, ``"nested_sequence"``) get their position as time.
    ``"tensor"`` values get time 0. Measurement names default to ``"0"``, ``"1"``, ...

    Example:
        >>> table = to_events(cohort.samples, cohort.input_schema)
        >>> table.to_parquet("events.parquet")
        >>> list(table.columns)
        ['patient_id', 'visit_id', 'time', 'feature', 'code', 'value']
    """
    pd = _require_pandas()
    processors: dict[str, FeatureProcessor] = {}
    for key, schema in input_schema.items():
        cls = FEATURE_PROCESSORS.get(schema) if isinstance(schema, str) else None
        if cls is None or cls.event_kind is None:
            raise ValueError(f"feature '{key}': schema {schema!r} has no event form")
        processors[key] = cls()
    rows: list[tuple] = []
    for sample in samples:
        pid = str(sample["patient_id"])
        for key, processor in processors.items():
            names = None if columns is None else columns.get(key)
            for visit, time, code, value in processor.to_events(sample[key], key, pid, names):
                rows.append((pid, visit, time, key, code, value))
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))

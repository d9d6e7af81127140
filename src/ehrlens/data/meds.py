"""MEDS datasets and task labels -> samples: one sample per (subject, prediction time).

A MEDS dataset (Medical Event Data Standard, package ``meds``) is a folder::

    ROOT/data/**/*.parquet            subject_id int64, time timestamp[us] (null: static),
                                      code string[, numeric_value float32, text_value, ...]
    ROOT/metadata/codes.parquet       code, description, parent_codes (optional here)
    ROOT/metadata/subject_splits.parquet   subject_id, split (train / tuning / held_out)
    ROOT/metadata/dataset.json

Each subject is in exactly one data shard, its rows contiguous and sorted by time. Task labels
(e.g. from ACES) are Parquet files with ``subject_id``, ``prediction_time`` and one of
``boolean_value`` (-> ``"binary"``), ``integer_value`` / ``categorical_value``
(-> ``"multiclass"``) or ``float_value`` (-> ``"regression"``).

How samples are built (:func:`from_meds`):

- One sample per label row, ``patient_id`` ``"<subject_id>@<prediction time, ISO>"``, with
  ``subject_id`` and ``prediction_time`` kept for the attribution rows.
- Only rows with ``time <= prediction_time`` are used, and static rows (null time): no event
  after the prediction time reaches the model.
- Codes become features by their vocabulary prefix (the part before ``//``): ``LAB//HR`` is
  in feature ``LAB``; codes without a prefix are in ``other``. ``features`` chooses instead:
  ``{"diagnoses": ["ICD9CM", "ICD10CM"]}`` takes the codes with those prefixes (or exactly
  those codes); codes no feature takes are left out, with a counted warning.
- Events with the same time form one step (``time_bucket``, a pandas frequency such as
  ``"1h"`` or ``"1D"``, groups them by interval instead); static rows form a first step of
  their own. Code features are ``"nested_sequence"`` (or ``"stagenet"`` with times).
- Features named in ``numeric`` are ``"timeseries"`` of the ``numeric_value`` of their
  codes (one column per code); their rows without a value are left out, with a count.
- ``text_value`` and extension columns are not used.
- Splits come from ``metadata/subject_splits.parquet`` (``train`` / ``tuning`` /
  ``held_out`` -> train / val / test), by subject.

Everything is read with pyarrow and checked with the ``meds`` schemas (extra
``ehrlens[meds]``). Bad input is a :class:`ValueError` naming the file and what is wrong;
rows or labels skipped where that is safe are counted in a :class:`MedsWarning`.

Example:
    >>> data = from_meds("meds/", "meds/task_labels/boolean_value_task/")  # a folder of labels
    >>> data.input_schema["ADMISSION"], sorted(data.input_schema), data.output_schema
    ('nested_sequence', ['ADMISSION', 'EYE_COLOR', 'other'], {'label': 'binary'})
    >>> dataset = create_sample_dataset(data.samples, data.input_schema, data.output_schema)
    >>> len(dataset), sorted(set(data.parts.values()))
    (21, ['test', 'train', 'val'])
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import file_sha256
from .events import TIME_UNITS, build_samples
from .processors import FEATURE_PROCESSORS, FeatureProcessor

#: Label columns of the MEDS label schema -> the output schema they set.
LABEL_KINDS = {
    "boolean_value": "binary",
    "integer_value": "multiclass",
    "categorical_value": "multiclass",
    "float_value": "regression",
}
#: MEDS split names -> the parts of an ehrlens training split.
SPLIT_PARTS = {"train": "train", "tuning": "val", "held_out": "test"}
#: Feature of codes without a vocabulary prefix, by default.
OTHER_FEATURE = "other"
#: The step of static rows (null time).
STATIC_STEP = "static"
_SHOWN = 5


class MedsWarning(UserWarning):
    """Rows or labels of a MEDS dataset were left out; the message says how many and why."""


def _require_meds() -> Any:
    try:
        import meds
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "reading MEDS datasets needs the meds package, pyarrow and pandas: "
            "pip install 'ehrlens[meds]'"
        ) from error
    return meds


@dataclass
class MedsOptions:
    """How MEDS rows become features; recorded with a trained model so that later commands
    build the same features.

    Attributes:
        features: ``{feature: [prefix or code, ...]}`` (``""``: the codes without a
            prefix); ``None``: one feature per prefix, and ``other``.
        numeric: features built from ``numeric_value`` (``"timeseries"``).
        columns: measurement names per numeric feature (default: the codes seen, sorted).
        time_bucket: pandas frequency grouping events into steps (``None``: equal times).
        time_unit: unit of step times since the first event (``"stagenet"``, numeric).
        separator: what separates a code's vocabulary prefix (``"//"``).
        layout: schema of code features: ``"nested_sequence"`` or ``"stagenet"``.
    """

    features: dict[str, list[str]] | None = None
    numeric: list[str] = field(default_factory=list)
    columns: dict[str, list[str]] | None = None
    time_bucket: str | None = None
    time_unit: str = "days"
    separator: str = "//"
    layout: str = "nested_sequence"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a model card."""
        return {
            "features": self.features,
            "numeric": list(self.numeric),
            "columns": self.columns,
            "time_bucket": self.time_bucket,
            "time_unit": self.time_unit,
            "separator": self.separator,
            "layout": self.layout,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> MedsOptions:
        """The options of :meth:`to_dict`."""
        unknown = set(state) - set(cls().to_dict())
        if unknown:
            raise ValueError(f"unknown MEDS option(s) {sorted(unknown)}")
        return cls(**dict(state))

    def check(self) -> None:
        """Raise a ValueError naming a bad option."""
        if self.time_unit not in TIME_UNITS:
            raise ValueError(
                f"time_unit must be one of {sorted(TIME_UNITS)}, got {self.time_unit!r}"
            )
        if self.layout not in ("nested_sequence", "stagenet"):
            raise ValueError(f"layout must be 'nested_sequence' or 'stagenet', got {self.layout!r}")
        if not self.separator:
            raise ValueError("separator must not be empty")
        if self.time_bucket is not None:
            import pandas as pd

            try:
                pd.Timestamp("2000-01-01").floor(self.time_bucket)
            except ValueError as error:
                raise ValueError(
                    f"time_bucket {self.time_bucket!r} is not a fixed pandas frequency such as "
                    f"'1h' or '1D' ({error})"
                ) from error
        if self.features is not None:
            for name, prefixes in self.features.items():
                if not prefixes or not all(isinstance(p, str) for p in prefixes):
                    raise ValueError(f"feature '{name}': give one or more prefixes or codes")
            missing = [n for n in self.numeric if n not in self.features]
            if missing:
                raise ValueError(
                    f"numeric feature(s) {missing} are not among {list(self.features)}"
                )


@dataclass
class MedsData:
    """What :func:`from_meds` read.

    Attributes:
        samples: one sample dict per (subject, prediction time), in shard order, then the
            subject's order in its shard, then prediction time.
        input_schema / output_schema: the features built and the label's kind.
        options: the options used, with ``features`` and ``columns`` resolved (what a model
            card records).
        parts: ``{patient_id: "train" | "val" | "test"}`` from ``subject_splits.parquet``
            (``None`` without one); samples of subjects in other splits have no part.
        descriptions: ``{code: description}`` from ``metadata/codes.parquet``.
        shards: the data files read, in order.
    """

    samples: list[dict[str, Any]]
    input_schema: dict[str, str]
    output_schema: dict[str, str]
    options: MedsOptions
    parts: dict[str, str] | None = None
    descriptions: dict[str, str] = field(default_factory=dict)
    shards: list[Path] = field(default_factory=list)


def data_shards(root: str | os.PathLike) -> list[Path]:
    """The data files of a MEDS dataset, ``ROOT/data/**/*.parquet``, sorted by path.

    Raises:
        ValueError: ``root`` is not a folder with a ``data/`` folder holding Parquet files.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a MEDS dataset (not a folder)")
    data = root / "data"
    if not data.is_dir():
        raise ValueError(f"{root}: not a MEDS dataset (no data/ folder with the event shards)")
    shards = sorted(data.rglob("*.parquet"), key=lambda p: p.relative_to(data).as_posix())
    if not shards:
        raise ValueError(f"{data}: no .parquet data shards")
    return shards


def meds_digest(root: str | os.PathLike, labels: str | os.PathLike) -> str:
    """SHA-256 (hex) over every data shard's and label file's path and content."""
    digest = hashlib.sha256()
    root = Path(root)
    for path in data_shards(root):
        digest.update(f"{path.relative_to(root).as_posix()}:{file_sha256(path)}\n".encode())
    labels = Path(labels)
    files = sorted(labels.rglob("*.parquet")) if labels.is_dir() else [labels]
    for path in files:
        digest.update(f"labels/{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def sample_id(subject_id: int, prediction_time: datetime) -> str:
    """The ``patient_id`` of one MEDS sample: ``"<subject_id>@<prediction time, ISO>"``."""
    return f"{int(subject_id)}@{prediction_time.isoformat()}"


def read_shard(path: Path) -> Any:
    """One data shard as a pandas DataFrame (``subject_id, time, code, numeric_value``),
    checked against the MEDS data schema, the subjects' contiguity and their time order.

    Raises:
        ValueError: naming the file: not Parquet, wrong or missing columns, nulls where MEDS
            allows none, a subject's rows split apart, or times out of order.
    """
    meds = _require_meds()
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from error
    try:
        meds.DataSchema.validate(table)
    except Exception as error:  # flexible_schema's validation errors
        raise ValueError(f"{path}: not MEDS data: {str(error).strip()}") from error
    check_years(table, "time", path)
    columns = ["subject_id", "time", "code"]
    has_values = "numeric_value" in table.column_names
    if has_values:
        check_values(table, path)
    frame = table.select(columns + (["numeric_value"] if has_values else [])).to_pandas()
    if not has_values:
        frame["numeric_value"] = np.nan
    frame["time"] = frame["time"].astype("datetime64[us]")
    subjects = frame["subject_id"].to_numpy()
    if len(subjects):
        starts = np.flatnonzero(np.r_[True, subjects[1:] != subjects[:-1]])
        seen = subjects[starts]
        if len(set(seen.tolist())) != len(seen):
            values, counts = np.unique(seen, return_counts=True)
            split = int(values[counts > 1][0])
            raise ValueError(
                f"{path}: subject {split}'s rows are not contiguous (MEDS keeps each "
                "subject's rows together, sorted by time)"
            )
    timed = frame[frame["time"].notna()]
    if len(timed):
        times = timed["time"].to_numpy()
        same = timed["subject_id"].to_numpy()
        back = np.flatnonzero((same[1:] == same[:-1]) & (times[1:] < times[:-1]))
        if len(back):
            i = back[0]
            raise ValueError(
                f"{path}: subject {int(same[i])}'s times are not sorted ({times[i + 1]} after "
                f"{times[i]}; MEDS sorts each subject's rows by time)"
            )
    return frame


#: The earliest time a MEDS row may hold: Python's dates start at year 1.
FIRST_TIME = datetime(1, 1, 1)
#: The largest ``numeric_value`` magnitude read: its square (standardising) stays finite in
#: float32, and no real measurement comes near it.
MAX_ABS_VALUE = 1e18


def _row_subject(table: Any, row: int) -> str:
    if "subject_id" not in table.column_names:
        return ""
    return f" (subject {table.column('subject_id')[row].as_py()})"


def check_years(table: Any, column: str, path: str | os.PathLike) -> None:
    """Refuse a time before year 1 (``0000-01-01`` fits in Parquet but has no Python date),
    naming the file, the row (counting from 0) and the subject.

    Example:
        >>> path = "meds/data/train/0.parquet"
        >>> check_years(pq.read_table(path), "time", path)   # None: every time is after year 1
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = table.column(column)
    if not pa.types.is_timestamp(values.type) or len(values) == 0:
        return
    micros = pc.cast(pc.cast(values, pa.timestamp("us")), pa.int64())
    first = int((FIRST_TIME - datetime(1970, 1, 1)).total_seconds() * 1_000_000)
    early = pc.less(micros, first)
    if not pc.any(early).as_py():
        return
    row = int(pc.index(early, True).as_py())
    raw = int(micros[row].as_py())
    raise ValueError(
        f"{path}: row {row}{_row_subject(table, row)}: {column} is before year 1 "
        f"({raw} microseconds since 1970, e.g. 0000-01-01); dates must lie in years 1-9999"
    )


def check_values(table: Any, path: str | os.PathLike) -> None:
    """Refuse a ``numeric_value`` that is infinite or beyond :data:`MAX_ABS_VALUE` in size,
    naming the file, the row (counting from 0), the subject, the code and the value.

    Example:
        >>> path = "meds/data/train/0.parquet"
        >>> check_values(pq.read_table(path), path)   # None: every value is finite and in range
    """
    values = table.column("numeric_value").to_numpy(zero_copy_only=False).astype(np.float64)
    bad = np.flatnonzero(np.isinf(values) | (np.abs(np.nan_to_num(values)) > MAX_ABS_VALUE))
    if not len(bad):
        return
    row = int(bad[0])
    code = table.column("code")[row].as_py() if "code" in table.column_names else None
    raise ValueError(
        f"{path}: row {row}{_row_subject(table, row)}, code {code!r}: numeric_value "
        f"{values[row]:.6g} is beyond ±{MAX_ABS_VALUE:.0e} ({len(bad)} such row(s)); such a "
        "value is a unit or entry error, and would overflow standardisation in float32"
    )


def read_labels(labels: str | os.PathLike) -> tuple[Any, str]:
    """Task labels (a Parquet file, or a folder of them: ``**/*.parquet``) as a DataFrame with
    ``subject_id``, ``prediction_time`` and ``label``, plus the label column's name.

    Label columns that are entirely null are ignored (writers often add all four); exactly
    one must remain. Rows are checked with the MEDS label schema.

    Raises:
        ValueError: naming the file: not Parquet, not MEDS labels, no label column or several,
            or the same (subject, prediction time) twice.
    """
    meds = _require_meds()
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(labels)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise ValueError(f"{path}: no .parquet label files")
    elif path.exists():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    parts, kinds = [], set()
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"{file}: not a readable Parquet file ({error})") from error
        empty = [
            c
            for c in LABEL_KINDS
            if c in table.column_names and table.column(c).null_count == len(table)
        ]
        if len(table):
            table = table.drop_columns(empty)
        try:
            meds.LabelSchema.validate(table)
        except Exception as error:
            raise ValueError(f"{file}: not MEDS task labels: {str(error).strip()}") from error
        present = [c for c in LABEL_KINDS if c in table.column_names]
        if len(table) == 0:
            continue
        if len(present) != 1:
            raise ValueError(
                f"{file}: expected exactly one label column of {list(LABEL_KINDS)} with values, "
                f"got {present or 'none'}"
            )
        kinds.add(present[0])
        check_years(table, "prediction_time", file)
        frame = table.select(["subject_id", "prediction_time", present[0]]).to_pandas()
        frame = frame.rename(columns={present[0]: "label"})
        frame["file"] = str(file)
        parts.append(frame)
    if not parts:
        raise ValueError(f"{path}: no label rows")
    if len(kinds) > 1:
        raise ValueError(f"{path}: label files mix label columns {sorted(kinds)}")
    frame = pd.concat(parts, ignore_index=True)
    frame["prediction_time"] = frame["prediction_time"].astype("datetime64[us]")
    twice = frame.duplicated(["subject_id", "prediction_time"], keep=False)
    if twice.any():
        row = frame[twice].iloc[0]
        raise ValueError(
            f"{row['file']}: subject {int(row['subject_id'])} has {int(twice.sum())} labels for "
            f"prediction time {row['prediction_time']} and others; one label per (subject, "
            "prediction time)"
        )
    return frame, kinds.pop()


def code_descriptions(root: str | os.PathLike) -> dict[str, str]:
    """``{code: description}`` from ``ROOT/metadata/codes.parquet`` (empty without one)."""
    meds = _require_meds()
    import pyarrow.parquet as pq

    path = Path(root) / "metadata" / "codes.parquet"
    if not path.exists():
        return {}
    table = pq.read_table(path)
    try:
        meds.CodeMetadataSchema.validate(table)
    except Exception as error:
        raise ValueError(f"{path}: not MEDS code metadata: {str(error).strip()}") from error
    if "description" not in table.column_names:
        return {}
    codes = table.column("code").to_pylist()
    texts = table.column("description").to_pylist()
    return {c: t for c, t in zip(codes, texts, strict=True) if c is not None and t}


def subject_splits(root: str | os.PathLike) -> dict[int, str] | None:
    """``{subject_id: split}`` from ``ROOT/metadata/subject_splits.parquet``, or None."""
    meds = _require_meds()
    import pyarrow.parquet as pq

    path = Path(root) / "metadata" / "subject_splits.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path)
    try:
        meds.SubjectSplitSchema.validate(table)
    except Exception as error:
        raise ValueError(f"{path}: not MEDS subject splits: {str(error).strip()}") from error
    subjects = table.column("subject_id").to_pylist()
    splits = table.column("split").to_pylist()
    unknown = sorted({str(s) for s in splits} - set(SPLIT_PARTS))
    if unknown:
        row = next(i for i, s in enumerate(splits) if str(s) in unknown)
        raise ValueError(
            f"{path}: unknown split name(s) {unknown} (row {row}, subject {subjects[row]}); "
            f"MEDS splits are {list(SPLIT_PARTS)}"
        )
    out: dict[int, str] = {}
    for subject, split in zip(subjects, splits, strict=True):
        if out.setdefault(subject, split) != split:
            raise ValueError(
                f"{path}: subject {subject} is in splits {out[subject]!r} and {split!r}"
            )
    return out


def _prefix(code: str, separator: str) -> str | None:
    return code.split(separator, 1)[0] if separator in code else None


def resolve_features(codes: Sequence[str], options: MedsOptions) -> dict[str, list[str]]:
    """``options.features``, or one feature per vocabulary prefix of ``codes`` (sorted), and
    ``other`` for codes without one."""
    if options.features is not None:
        return {k: list(v) for k, v in options.features.items()}
    prefixes = sorted({p for c in codes if (p := _prefix(c, options.separator)) is not None})
    features = {p: [p] for p in prefixes}
    if any(_prefix(c, options.separator) is None for c in codes):
        if OTHER_FEATURE in features:
            raise ValueError(
                f"prefix {OTHER_FEATURE!r} is also the feature of codes without a prefix; "
                "name the features yourself"
            )
        features[OTHER_FEATURE] = [""]  # "": the codes without a prefix
    return features


#: Sample keys a feature may not be named: the identity, the step identity, the masks.
RESERVED_NAMES = frozenset(
    {"patient_id", "subject_id", "prediction_time", "step_identity", "visit_id", "masks"}
)


def _check_feature_names(
    features: Mapping[str, list[str]],
    events: Any,
    separator: str,
    label_key: str,
    shards: Sequence[Path],
) -> None:
    """Refuse a feature that would be named ``""`` (a code such as ``//X``) or a reserved
    sample key (a code such as ``patient_id//N``), naming the code and its first row."""
    for name, prefixes in features.items():
        empty = name == "" or (separator and name.startswith(separator))
        if not empty and name not in RESERVED_NAMES and name != label_key:
            continue
        prefix = next((p for p in prefixes if p), name)
        taken = events["code"].astype(str)
        hit = taken.eq(prefix) | taken.str.startswith(prefix + separator)
        if not prefix:
            hit = taken.str.startswith(separator)
        first = events[hit].iloc[0] if hit.any() else None
        where = (
            f"{shards[int(first['shard'])]}: row {int(first['row'])} (subject "
            f"{first['subject_id']}), code {first['code']!r}"
            if first is not None
            else f"feature {name!r}"
        )
        why = (
            f"its vocabulary prefix (before {separator!r}) is empty"
            if empty
            else f"its prefix {name!r} is a reserved sample key (the identity, the masks or "
            "the label)"
        )
        raise ValueError(
            f"{where}: {why}, so it cannot name a feature; rename the code, or name the "
            "features yourself (--feature NAME=PREFIX,...)"
        )


def _feature_of(codes: Any, features: Mapping[str, list[str]], separator: str) -> Any:
    """Each distinct code's feature (None where no feature takes it)."""
    out: dict[str, str | None] = {}
    for code in codes:
        chosen = None
        for name, prefixes in features.items():
            for p in prefixes:
                if (p == "" and separator not in code) or (
                    p and (code == p or code.startswith(p + separator))
                ):
                    chosen = name
                    break
            if chosen is not None:
                break
        out[code] = chosen
    return out


def _warn(message: str) -> None:
    warnings.warn(message, MedsWarning, stacklevel=3)


def from_meds(
    root: str | os.PathLike,
    labels: str | os.PathLike,
    *,
    features: Mapping[str, Sequence[str]] | None = None,
    numeric: Sequence[str] = (),
    time_bucket: str | None = None,
    time_unit: str = "days",
    separator: str = "//",
    layout: str = "nested_sequence",
    label_key: str = "label",
    options: MedsOptions | None = None,
    shards: Sequence[int] | None = None,
) -> MedsData:
    """Read a MEDS dataset and its task labels as samples (see the module docstring).

    Args:
        root: the MEDS folder (``data/``, ``metadata/``).
        labels: a label Parquet file or a folder of them.
        features: ``{feature: [prefix or code, ...]}``; default one feature per prefix.
        numeric: features built from ``numeric_value`` as ``"timeseries"``.
        time_bucket: pandas frequency for steps (``"1h"``); default: one step per time.
        time_unit: unit of step times (``"days"``, ``"hours"``, ``"minutes"``, ``"seconds"``).
        separator: the prefix separator of codes.
        layout: ``"nested_sequence"`` or ``"stagenet"`` for code features.
        label_key: the label's key in each sample (and in the output schema).
        options: all of the above at once (e.g. from a model card); overrides them.
        shards: read only these data files (indices into :func:`data_shards`), e.g. one shard
            per worker; labels of subjects in other shards are then not an error.

    Returns:
        :class:`MedsData`.

    Raises:
        ValueError: naming the file and what is wrong (see :func:`read_shard`,
            :func:`read_labels`), a subject in two shards, labels for subjects the data do
            not have, or no sample at all.

    Warns:
        MedsWarning: counting rows of codes no feature takes, numeric rows without a value,
        and labels whose prediction time comes before the subject's first event (skipped).

    Example:
        >>> features = {"stay": ["ADMISSION", "DISCHARGE"], "vitals": ["HR", "TEMP"],
        ...             "static": ["EYE_COLOR", "HEIGHT", "MEDS_BIRTH"]}  # every code taken
        >>> data = from_meds("meds/", "labels.parquet", features=features, numeric=["vitals"],
        ...                  time_bucket="1h")
        >>> data.samples[0]["patient_id"], data.input_schema["vitals"]
        ('1500733@2010-06-03T15:00:00', 'timeseries')
        >>> data.samples[0]["vitals"]   # ([days since the first event (birth)], [[HR, TEMP]])
        ([8719.62...], [[91.4..., 100.0]])
    """
    import pandas as pd

    _require_meds()
    if options is None:
        options = MedsOptions(
            features=None if features is None else {k: list(v) for k, v in features.items()},
            numeric=list(numeric), time_bucket=time_bucket, time_unit=time_unit,
            separator=separator, layout=layout,
        )  # fmt: skip
    options.check()
    all_shards = data_shards(root)
    chosen = list(range(len(all_shards))) if shards is None else list(shards)
    label_frame, label_column = read_labels(labels)
    frames = []
    owner: dict[int, Path] = {}
    for number in chosen:
        path = all_shards[number]
        frame = read_shard(path)
        _claim_subjects(owner, pd.unique(frame["subject_id"]).tolist(), path)
        frame["shard"] = number
        frame["row"] = np.arange(len(frame))
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True)
    if shards is None:
        _check_labelled(label_frame, owner, root, labels)
    label_frame = label_frame[label_frame["subject_id"].isin(set(owner))]
    if shards is not None and len(label_frame) == 0:  # a shard no label points into
        return MedsData([], {}, {label_key: LABEL_KINDS[label_column]}, options, None, {},
                        [all_shards[i] for i in chosen])  # fmt: skip
    codes = sorted(set(events["code"].tolist()))
    resolved = resolve_features(codes, options)
    _check_feature_names(resolved, events, options.separator, label_key, all_shards)
    options = MedsOptions(**{**options.to_dict(), "features": resolved})
    options.check()
    feature_of = _feature_of(codes, resolved, options.separator)
    events["feature"] = events["code"].map(feature_of)
    untaken = events["feature"].isna()
    if untaken.any():
        names = sorted(set(events.loc[untaken, "code"]))
        _warn(
            f"{root}: left out {int(untaken.sum())} row(s) of {len(names)} code(s) that no "
            f"feature takes, e.g. {names[:_SHOWN]}"
        )
    is_numeric = events["feature"].isin(set(options.numeric))
    no_value = is_numeric & events["numeric_value"].isna()
    if no_value.any():
        _warn(
            f"{root}: left out {int(no_value.sum())} row(s) of numeric feature(s) "
            f"{sorted(set(events.loc[no_value, 'feature']))} without a numeric_value"
        )
    events = events[~untaken & ~no_value].reset_index(drop=True)
    events["order"] = np.arange(len(events))
    samples_frame, order = _sample_rows(events, label_frame, options)
    if samples_frame is None:
        if shards is None:
            raise ValueError(f"{root}: no sample has an event at or before its prediction time")
        return MedsData([], {}, {label_key: LABEL_KINDS[label_column]}, options, None, {},
                        [all_shards[i] for i in chosen])  # fmt: skip
    input_schema = {
        name: "timeseries" if name in options.numeric else options.layout for name in resolved
    }
    processors: dict[str, FeatureProcessor] = {
        key: FEATURE_PROCESSORS[schema]() for key, schema in input_schema.items()
    }
    columns = options.columns
    if columns is None and options.numeric:
        columns = {
            key: sorted(set(samples_frame.loc[samples_frame["feature"] == key, "code"]))
            for key in options.numeric
        }
    options.columns = columns
    label_of = dict(zip(order["patient_id"], order["label"], strict=True))
    samples = build_samples(
        samples_frame, processors, columns=columns, labels=label_of, label_key=label_key,
        dated=True, identity=True,
    )  # fmt: skip
    identity = dict(
        zip(
            order["patient_id"],
            zip(order["subject_id"], order["prediction_time"], strict=False),
            strict=False,
        )
    )
    for sample in samples:
        subject, when = identity[sample["patient_id"]]
        sample["subject_id"] = int(subject)
        sample["prediction_time"] = when.to_pydatetime()
        for steps in sample.get("step_identity", {}).values():
            steps.pop("visit_id", None)  # MEDS steps are times, not visits
    if not samples:
        raise ValueError(f"{root}: no sample has an event at or before its prediction time")
    splits = subject_splits(root)
    parts = None
    if splits is not None:
        parts = {
            s["patient_id"]: SPLIT_PARTS[splits[s["subject_id"]]]
            for s in samples
            if splits.get(s["subject_id"]) in SPLIT_PARTS
        }
    return MedsData(
        samples=samples,
        input_schema=input_schema,
        output_schema={label_key: LABEL_KINDS[label_column]},
        options=options,
        parts=parts,
        descriptions=code_descriptions(root),
        shards=[all_shards[i] for i in chosen],
    )


def _claim_subjects(owner: dict[int, Path], subjects: Sequence[int], path: Path) -> None:
    """Record that ``path`` holds ``subjects``; a subject already held elsewhere is an error."""
    for subject in set(subjects):
        if subject in owner:
            raise ValueError(
                f"subject {subject} is in two data shards, {owner[subject]} and {path} "
                "(MEDS keeps each subject in one shard)"
            )
        owner[subject] = path


def _check_labelled(
    label_frame: Any, owner: Mapping[int, Path], root: str | os.PathLike, labels: Any
) -> None:
    """Every labelled subject is in some data shard."""
    unknown = sorted(set(label_frame["subject_id"].tolist()) - set(owner))
    if unknown:
        raise ValueError(
            f"{labels}: {len(unknown)} labelled subject(s) are in no data shard of {root}, "
            f"e.g. {unknown[:_SHOWN]}"
        )


def shard_sample_ids(root: str | os.PathLike, labels: str | os.PathLike) -> list[list[str]]:
    """The sample ids (:func:`sample_id`) whose subjects each data shard holds, sorted, read
    from the shards' ``subject_id`` columns and the labels only (no events are read): what a
    worker reading one shard with :func:`from_meds` (``shards=[i]``) is expected to explain.
    The same checks as :func:`from_meds`: a subject in two shards, labels for subjects in no
    shard.

    Raises:
        ValueError: naming the files.

    Example:
        >>> shard_sample_ids("meds/", "labels.parquet")[0][:2]   # shard 0: held_out/0.parquet
        ['1500733@2010-06-03T15:00:00', '1500733@2010-06-03T15:30:00']
    """
    import pyarrow.parquet as pq

    shards = data_shards(root)
    owner: dict[int, Path] = {}
    for path in shards:
        try:
            subjects = pq.read_table(path, columns=["subject_id"]).column(0).to_pylist()
        except Exception as error:
            raise ValueError(f"{path}: cannot read its subject_id column ({error})") from error
        _claim_subjects(owner, subjects, path)
    frame, _ = read_labels(labels)
    _check_labelled(frame, owner, root, labels)
    number = {path: i for i, path in enumerate(shards)}
    expected: list[list[str]] = [[] for _ in shards]
    for subject, when in zip(frame["subject_id"], frame["prediction_time"], strict=True):
        expected[number[owner[subject]]].append(sample_id(subject, when.to_pydatetime()))
    return [sorted(ids) for ids in expected]


def _sample_rows(events: Any, label_frame: Any, options: MedsOptions) -> tuple[Any, Any]:
    """The event rows of every sample (``time <= prediction_time``, static rows always) in
    the frame :func:`~ehrlens.data.events.build_samples` takes (None when no sample is
    left), and the samples in order."""
    import pandas as pd

    first_row = events.groupby("subject_id", sort=False)["order"].min()
    labels = label_frame.copy()
    labels["first"] = labels["subject_id"].map(first_row)
    labels = labels.sort_values(["first", "prediction_time"], kind="stable").reset_index(drop=True)
    labels["patient_id"] = [
        sample_id(s, t.to_pydatetime())
        for s, t in zip(labels["subject_id"], labels["prediction_time"], strict=True)
    ]
    labels["label"] = [_plain_label(v) for v in labels["label"]]
    labels["sample"] = np.arange(len(labels))
    joined = events.merge(
        labels[["subject_id", "prediction_time", "patient_id", "sample"]], on="subject_id"
    )
    static = joined["time"].isna()
    joined = joined[static | (joined["time"] <= joined["prediction_time"])].copy()
    joined["timed"] = joined["time"].notna()  # static rows first: the first step
    joined = joined.sort_values(["sample", "timed", "order"], kind="stable")
    joined = joined.reset_index(drop=True)
    timed = joined[joined["time"].notna()]
    first_time = timed.groupby("sample")["time"].min()
    without = labels[~labels["sample"].isin(first_time.index)]
    if len(without):
        examples = without["patient_id"].tolist()[:_SHOWN]
        _warn(
            f"left out {len(without)} label(s) whose prediction time comes before the "
            f"subject's first event (nothing to predict from), e.g. {examples}"
        )
    joined = joined[joined["sample"].isin(first_time.index)].reset_index(drop=True)
    labels = labels[labels["sample"].isin(first_time.index)].reset_index(drop=True)
    if len(joined) == 0:
        return None, labels
    static = joined["time"].isna().to_numpy()
    step_time = joined["time"]
    if options.time_bucket is not None:
        step_time = step_time.dt.floor(options.time_bucket)
    keys = np.where(
        static, STATIC_STEP, "@" + step_time.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").fillna("")
    )
    filled = joined["time"].fillna(joined["sample"].map(first_time))
    micros = filled.astype("datetime64[us]").astype("int64").to_numpy()
    frame = pd.DataFrame(
        {
            "row": np.arange(len(joined)),
            "patient_id": joined["patient_id"].to_numpy(),
            "visit": keys,
            "visit_id": np.full(len(joined), None, dtype=object),
            "time": micros / 1e6 / TIME_UNITS[options.time_unit],
            "stamp": joined["time"].to_numpy(),
            "feature": joined["feature"].to_numpy(),
            "code": joined["code"].to_numpy(),
            "value": joined["numeric_value"].astype("float64").to_numpy(),
        }
    )
    return frame, labels


def _plain_label(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    return value


__all__ = [
    "LABEL_KINDS",
    "SPLIT_PARTS",
    "MedsData",
    "MedsOptions",
    "MedsWarning",
    "code_descriptions",
    "data_shards",
    "from_meds",
    "meds_digest",
    "read_labels",
    "read_shard",
    "sample_id",
    "shard_sample_ids",
    "subject_splits",
]

"""Writers of small MEDS datasets for tests: hand-built tables, the package's static sample
(meds_testing_helpers) and its generator."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATA_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("numeric_value", pa.float32()),
    ]
)
LABEL_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("prediction_time", pa.timestamp("us")),
        ("boolean_value", pa.bool_()),
    ]
)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def write_rows(path: Path, rows, schema=DATA_SCHEMA) -> Path:
    """Rows ``(subject_id, time or None, code, value or None)`` as one Parquet shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    table = pa.table(
        {f.name: pa.array(list(c), f.type) for f, c in zip(schema, columns, strict=False)}
    )
    pq.write_table(table, path)
    return path


def write_labels(path: Path, rows, column: str = "boolean_value", kind=None) -> Path:
    kind = pa.bool_() if kind is None else kind
    path.parent.mkdir(parents=True, exist_ok=True)
    subjects, times, values = (list(c) for c in zip(*rows, strict=True))
    table = pa.table(
        {
            "subject_id": pa.array(subjects, pa.int64()),
            "prediction_time": pa.array(times, pa.timestamp("us")),
            column: pa.array(values, kind),
        }
    )
    pq.write_table(table, path)
    return path


def write_splits(root: Path, splits: dict[int, str]) -> None:
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "subject_id": pa.array(list(splits), pa.int64()),
            "split": pa.array(list(splits.values()), pa.string()),
        }
    )
    pq.write_table(table, root / "metadata" / "subject_splits.parquet")


def write_codes(root: Path, descriptions: dict[str, str]) -> None:
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "code": pa.array(list(descriptions), pa.string()),
            "description": pa.array(list(descriptions.values()), pa.string()),
            "parent_codes": pa.array([None] * len(descriptions), pa.list_(pa.string())),
        }
    )
    pq.write_table(table, root / "metadata" / "codes.parquet")


def static_sample(root: Path) -> tuple[Path, Path]:
    """The static MEDS sample with its boolean task (meds_testing_helpers)."""
    from meds_testing_helpers.dataset import MEDSDataset
    from meds_testing_helpers.static_sample_data import SIMPLE_STATIC_SHARDED_BY_SPLIT_WITH_TASKS

    MEDSDataset.from_yaml(SIMPLE_STATIC_SHARDED_BY_SPLIT_WITH_TASKS).write(Path(root))
    return Path(root), Path(root) / "task_labels" / "boolean_value_task"


def generated(root: Path, n_subjects: int, seed: int = 1) -> Path:
    """A MEDS dataset from the package's generator (two data shards), via its command."""
    script = Path(sys.executable).with_name("build_sample_MEDS_dataset")
    subprocess.run(
        [
            str(script),
            f"seed={seed}",
            f"N_subjects={n_subjects}",
            "do_overwrite=False",
            f"output_dir={root}",
            "dataset_spec/data_generator=sample",
        ],
        check=True,
        capture_output=True,
        cwd=root.parent,
    )
    return root


def generated_labels(root: Path, path: Path, seed: int = 0) -> Path:
    """Two prediction times per subject, at event times of its record; the label says whether
    code ``dynamic//1`` occurs at or before the prediction time (so it is learnable)."""
    rng = np.random.default_rng(seed)
    rows = []
    for shard in sorted((root / "data").rglob("*.parquet")):
        frame = pq.read_table(shard).to_pandas()
        for subject, events in frame.groupby("subject_id", sort=False):
            times = sorted(set(events["time"].dropna()))
            if len(times) < 2:
                continue
            for when in sorted(rng.choice(len(times), size=2, replace=False)):
                cut = times[when]
                seen = events[(events["time"] <= cut) & (events["code"] == "dynamic//1")]
                rows.append((int(subject), cut.to_pydatetime(), bool(len(seen))))
    return write_labels(path, rows)

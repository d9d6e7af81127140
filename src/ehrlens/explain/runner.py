"""Explain a whole cohort: every patient, every method, into one long-format table.

With ``out_dir`` the table is written as Parquet shards of ``shard_size`` patients each
(``part-00000.parquet``, ...). Each shard is written to a temporary file and renamed into place,
and carries in its Parquet metadata the run's fingerprint (model, data, methods, settings), its
index, its row count and a hash of its patient ids. A re-run with the same arguments verifies
each existing shard against that and computes only the missing or damaged ones, so an
interrupted run resumes and ends with exactly the rows of an uninterrupted one: no duplicates,
no gaps. A folder holding another run's output is refused, never overwritten.

Example:
    >>> result = explain_cohort(model, test_dataset, ["rollout", "chefer"], out_dir="attr/")
    >>> frame = result.to_frame()        # pandas, columns ATTRIBUTION_COLUMNS
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data.dataset import SampleDataset, move_to_device
from ..interpret.methods import BaseInterpreter
from ..interpret.registry import METHODS, make_interpreter
from ..io import atomic_write
from ..trainer import progress_bar
from .table import (
    ATTRIBUTION_COLUMNS,
    columns_to_arrow,
    concat_columns,
    method_columns,
    model_fingerprint,
)

MANIFEST = "_ehrlens_run.json"
SHARD_PATTERN = "part-{:05d}.parquet"
MethodSpec = Sequence[str] | Mapping[str, Mapping[str, Any] | BaseInterpreter]


class OutputConflictError(FileExistsError):
    """``out_dir`` holds output that this run did not make; nothing was changed."""


@dataclass
class ExplainResult:
    """What :func:`explain_cohort` produced.

    Attributes:
        shards: shard files, in order (empty when nothing was written to disk).
        computed: indices of shards computed in this call.
        reused: indices of shards found complete and verified, so not recomputed.
        num_rows: rows in the whole table.
        fingerprint: the run's fingerprint (model, data, methods, settings).
    """

    shards: list[Path] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    num_rows: int = 0
    fingerprint: str = ""
    _columns: dict[str, list] | None = None

    def to_arrow(self):
        """The whole table as a pyarrow Table (read back from the shards when on disk)."""
        if self._columns is not None:
            return columns_to_arrow(self._columns)
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pa.concat_tables([pq.read_table(path) for path in self.shards])

    def to_frame(self):
        """The whole table as a pandas DataFrame, columns :data:`ATTRIBUTION_COLUMNS`."""
        return self.to_arrow().to_pandas()


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
    """16 hex digits of a SHA-256 over every patient's id and processed features."""
    digest = hashlib.sha256()
    for index in range(len(dataset)):
        item = dataset[index]
        _hash_value(digest, {k: v for k, v in item.items() if k in dataset.feature_keys})
        digest.update(str(item["patient_id"]).encode())
    return digest.hexdigest()[:16]


def interpreter_settings(interpreter: BaseInterpreter) -> dict[str, Any]:
    """An interpreter's plain-valued settings (``head_fusion``, ``seed``, ...), sorted."""
    plain = (bool, int, float, str, type(None))
    return {
        k: v for k, v in sorted(vars(interpreter).items()) if k != "model" and isinstance(v, plain)
    }


def build_methods(model: Any, methods: MethodSpec) -> dict[str, BaseInterpreter]:
    """``{name: interpreter}`` from names, ``{name: options}`` or ``{name: interpreter}``."""
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        built = {}
        for name, spec in methods.items():
            if isinstance(spec, BaseInterpreter):
                built[name] = spec
            else:
                built[name] = make_interpreter(name, model, **dict(spec))
        return built
    if not methods:
        raise ValueError("methods is empty: name at least one, e.g. ['rollout']")
    return {name: make_interpreter(name, model) for name in methods}


def run_settings(
    model_id: str,
    data: str,
    interpreters: Mapping[str, BaseInterpreter],
    batch_size: int,
    shard_size: int,
    target_class_idx: int | None,
    **extra: Any,
) -> dict[str, Any]:
    """Everything that decides a run's rows, as plain data: hashed into its fingerprint and
    kept in its manifest. ``extra`` adds engine-specific entries."""
    return {
        **extra,
        "model_id": model_id,
        "data": data,
        "methods": method_settings(interpreters),
        "batch_size": batch_size,
        "shard_size": shard_size,
        "target_class_idx": target_class_idx,
    }


def run_fingerprint(settings: Mapping[str, Any]) -> str:
    """16 hex digits of a SHA-256 over a run's settings (model, data, methods, sizes)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def method_settings(interpreters: Mapping[str, BaseInterpreter]) -> dict[str, list]:
    """``{name: [class name, plain settings]}``: what the fingerprint knows of each method."""
    return {name: [type(i).__name__, interpreter_settings(i)] for name, i in interpreters.items()}


def shard_metadata(
    fingerprint: str, index: int, columns: Mapping[str, list], patient_ids: Sequence[str]
) -> dict[str, str]:
    """Parquet metadata that lets a later run verify a shard instead of trusting its name."""
    return {
        "ehrlens.run": fingerprint,
        "ehrlens.shard": str(index),
        "ehrlens.rows": str(len(columns["patient_id"])),
        "ehrlens.patients": patient_hash(patient_ids),
        "ehrlens.version": __version__,
    }


def _gradient_free(name: str, interpreter: BaseInterpreter) -> bool:
    info = METHODS.get(name)
    return info is not None and info.gradient_free and isinstance(interpreter, info.cls)


def patient_hash(patient_ids: Sequence[str]) -> str:
    """16 hex digits of a SHA-256 over a shard's patient ids, in order."""
    return hashlib.sha256("\n".join(patient_ids).encode()).hexdigest()[:16]


def explain_cohort(
    model: Any,
    dataset: SampleDataset,
    methods: MethodSpec = ("rollout",),
    *,
    batch_size: int = 64,
    target_class_idx: int | None = None,
    out_dir: str | os.PathLike | None = None,
    shard_size: int = 1000,
    model_id: str | None = None,
    progress: bool = False,
    on_shard: Callable[[int, Path], None] | None = None,
) -> ExplainResult:
    """Explain every patient of ``dataset`` with every method; optionally write Parquet shards.

    Args:
        model: a trained ehrlens model (or any model the methods accept), in eval mode during
            the run (its mode is restored after).
        dataset: the patients, processed with the model's schema.
        methods: method names (see :data:`~ehrlens.interpret.registry.METHODS`), or
            ``{name: constructor options}``, or ``{name: interpreter}``.
        batch_size: patients per forward pass.
        target_class_idx: class to explain (``None``: the methods' default: the positive class
            of a binary model, the predicted class of a multiclass one).
        out_dir: folder for Parquet shards; ``None`` keeps the table in memory.
        shard_size: patients per shard (a shard is the unit of resumption).
        model_id: the ``model_id`` column; default :func:`model_fingerprint`.
        progress: show a progress bar over batches.
        on_shard: called as ``on_shard(index, path)`` after each shard is written.

    Returns:
        :class:`ExplainResult`; ``to_frame()`` gives the table.

    Raises:
        OutputConflictError: ``out_dir`` holds another run's output or foreign shard files.
        ValueError / TypeError: from the methods, naming the feature and sample.

    Example:
        >>> result = explain_cohort(model, dataset, ["rollout", "flow"], out_dir="out/attr")
        >>> result.reused, result.computed    # ([], [0, 1, 2]) the first time
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    interpreters = build_methods(model, methods)
    schema = model.schema
    model_id = model_id or model_fingerprint(model)
    settings = run_settings(
        model_id, dataset_fingerprint(dataset), interpreters, batch_size, shard_size,
        target_class_idx,
    )  # fmt: skip
    fingerprint = run_fingerprint(settings)
    n = len(dataset)
    bounds = [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]
    result = ExplainResult(fingerprint=fingerprint)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        claim_output_dir(out, fingerprint, settings, len(bounds))

    parts = []
    bar = progress_bar(range(0, n, batch_size), progress, desc="explain", unit="batch")
    bar_iter = iter(bar)
    for index, (start, stop) in enumerate(bounds):
        patient_ids = [str(dataset[i]["patient_id"]) for i in range(start, stop)]
        path = None if out is None else out / SHARD_PATTERN.format(index)
        if path is not None:
            result.shards.append(path)
            rows = verified_shard_rows(path, fingerprint, index, patient_hash(patient_ids))
            if rows is not None:
                result.reused.append(index)
                result.num_rows += rows
                for _ in range(start, stop, batch_size):
                    next(bar_iter, None)
                continue
        columns = explain_rows(
            model, dataset, interpreters, range(start, stop), batch_size, target_class_idx,
            model_id, schema, bar_iter,
        )  # fmt: skip
        result.computed.append(index)
        result.num_rows += len(columns["patient_id"])
        if path is None:
            parts.append(columns)
            continue
        write_shard(path, columns, shard_metadata(fingerprint, index, columns, patient_ids))
        if on_shard is not None:
            on_shard(index, path)
    if hasattr(bar, "close"):
        bar.close()
    if out is None:
        result._columns = concat_columns(parts)
    else:
        finish_manifest(out, fingerprint, result.num_rows)
    return result


def explain_rows(
    model: Any,
    dataset: SampleDataset,
    interpreters: Mapping[str, BaseInterpreter],
    indices: Sequence[int],
    batch_size: int,
    target: int | None,
    model_id: str,
    schema: Any,
    bar_iter: Any = None,
) -> dict[str, list]:
    """Long-format columns for ``dataset[indices]``, explained ``batch_size`` at a time; rows
    in patient order, then method. ``bar_iter`` is advanced once per batch."""
    from ..interpret.api import eval_mode

    indices = list(indices)
    blocks = []
    with eval_mode(model):
        for offset in range(0, len(indices), batch_size):
            chunk = indices[offset : offset + batch_size]
            batch = dataset.collate([dataset[i] for i in chunk])
            batch = move_to_device(batch, getattr(model, "device", "cpu"))
            per_method = {}
            for name, interpreter in interpreters.items():
                if _gradient_free(name, interpreter):
                    with torch.inference_mode():
                        per_method[name] = interpreter.attribute(target, **batch)
                else:
                    per_method[name] = interpreter.attribute(target, **batch)
            blocks.append(method_columns(per_method, batch, schema, model_id))
            if bar_iter is not None:
                next(bar_iter, None)
    return concat_columns(blocks)


def read_attributions(folder: str | os.PathLike) -> Any:
    """The attribution table of a finished run's folder, as a pandas DataFrame.

    Raises:
        FileNotFoundError: ``folder`` has no run manifest (not written by an explain run).
        ValueError: the run is unfinished, or a shard it lists is missing; re-running the same
            explain call completes it.

    Example:
        >>> explain_cohort(model, dataset, ["rollout"], out_dir="attr/")
        >>> frame = read_attributions("attr/")     # columns ATTRIBUTION_COLUMNS
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}; is it a folder written by `explain`?")
    record = json.loads(manifest.read_text())
    if not record.get("complete"):
        raise ValueError(
            f"{folder}: the explain run is unfinished; run the same `ehrlens explain` command "
            "again to complete it"
        )
    shards = [folder / SHARD_PATTERN.format(i) for i in range(int(record["shards"]))]
    absent = [p.name for p in shards if not p.exists()]
    if absent:
        raise ValueError(f"{folder}: shard file(s) {absent[:3]} are missing; re-run explain")
    return pa.concat_tables([pq.read_table(p) for p in shards]).to_pandas()


def claim_output_dir(out: Path, fingerprint: str, settings: dict, n_shards: int) -> None:
    """Create ``out`` for this run, or check it holds this run's output; clean stale temps."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            previous = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise OutputConflictError(f"{manifest}: unreadable run manifest ({error})") from error
        if previous.get("fingerprint") != fingerprint:
            old = previous.get("settings", {})
            raise OutputConflictError(
                f"{out} holds attributions of a different run (model {old.get('model_id')}, "
                f"methods {sorted(old.get('methods', {}))}) than this one (model "
                f"{settings.get('model_id')}, methods {sorted(settings.get('methods', {}))}); "
                "nothing was changed. Write to a new folder, or delete that one yourself."
            )
    else:
        foreign = sorted(p.name for p in out.glob("part-*.parquet"))
        if foreign:
            raise OutputConflictError(
                f"{out} already holds shard files ({foreign[:3]}...) but no {MANIFEST}; "
                "nothing was changed. Write to a new folder."
            )
        record = {
            "fingerprint": fingerprint,
            "settings": settings,
            "shards": n_shards,
            "ehrlens_version": __version__,
            "complete": False,
        }
        with atomic_write(manifest) as f:
            json.dump(record, f, indent=2, sort_keys=True)
    for stale in out.glob(".part-*.tmp"):  # left by a killed run of ours
        stale.unlink(missing_ok=True)


def finish_manifest(out: Path, fingerprint: str, num_rows: int) -> None:
    """Mark the run in ``out`` complete, with its total row count."""
    manifest = out / MANIFEST
    record = json.loads(manifest.read_text())
    record.update(complete=True, rows=num_rows)
    with atomic_write(manifest) as f:
        json.dump(record, f, indent=2, sort_keys=True)


def verified_shard_rows(path: Path, fingerprint: str, index: int, patients: str) -> int | None:
    """Rows of a complete shard of this run, or None when it is absent or does not verify."""
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
    except Exception:  # damaged file: recompute it
        return None
    kv = {k.decode(): v.decode() for k, v in (metadata.metadata or {}).items()}
    expected = {
        "ehrlens.run": fingerprint,
        "ehrlens.shard": str(index),
        "ehrlens.patients": patients,
        "ehrlens.rows": str(metadata.num_rows),
    }
    if any(kv.get(k) != v for k, v in expected.items()):
        return None
    return metadata.num_rows


def write_shard(path: Path, columns: dict[str, list], metadata: dict[str, str]) -> None:
    """Write one shard's columns as Parquet with ``metadata``, atomically."""
    import pyarrow.parquet as pq

    table = columns_to_arrow(columns)
    schema_metadata = dict(table.schema.metadata or {})
    schema_metadata.update({k.encode(): v.encode() for k, v in metadata.items()})
    table = table.replace_schema_metadata(schema_metadata)
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f)


__all__ = [
    "ATTRIBUTION_COLUMNS",
    "ExplainResult",
    "OutputConflictError",
    "dataset_fingerprint",
    "explain_cohort",
    "explain_rows",
    "read_attributions",
]

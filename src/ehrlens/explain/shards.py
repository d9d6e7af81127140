"""Shard bookkeeping shared by both explain engines: run fingerprints, the run manifest,
verified Parquet shards, and reading a finished folder back.

An output folder holds ``_ehrlens_run.json`` (the run's fingerprint, settings and shard count,
``complete`` once every shard is written) and ``part-00000.parquet``, ... Each shard carries in
its Parquet metadata the run's fingerprint, its index, its row count, a hash of its patient
ids and a SHA-256 of its column data (:func:`table_digest`), so a re-run verifies a shard's
content instead of trusting its name or its metadata: a changed score, a flipped bit or a
file rewritten with the old metadata is found, and the shard is computed again.

Example:
    >>> result = explain_cohort(model, test_dataset, ["rollout"], out_dir="run/", shard_size=8)
    >>> sorted(p.name for p in Path("run").iterdir())
    ['_ehrlens_run.json', 'part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet']
    >>> len(read_attributions("run/")) == result.num_rows
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import __version__
from ..core.files import OutputConflictError, atomic_write
from ..core.locks import output_lock
from ..data.identity import IDENTITY_COLUMNS
from ..interpret.methods import BaseInterpreter
from .table import ATTRIBUTION_COLUMNS, columns_to_arrow

MANIFEST = "_ehrlens_run.json"
SHARD_PATTERN = "part-{:05d}.parquet"
#: Parquet metadata key of a shard's content digest.
CONTENT_KEY = "ehrlens.content"


@dataclass
class ExplainResult:
    """What :func:`explain_cohort` produced.

    Attributes:
        shards: shard files, in order (empty when nothing was written to disk).
        computed: indices of shards computed in this call.
        reused: indices of shards found complete and verified, so not recomputed.
        num_rows: rows in the whole table.
        num_patients: patients the run's source holds (after any selection).
        fingerprint: the run's fingerprint (model, data, methods, settings).
    """

    shards: list[Path] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    num_rows: int = 0
    fingerprint: str = ""
    num_patients: int = 0
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


def interpreter_settings(interpreter: BaseInterpreter) -> dict[str, Any]:
    """An interpreter's plain-valued settings (``head_fusion``, ``seed``, ...), sorted."""
    plain = (bool, int, float, str, type(None))
    return {
        k: v for k, v in sorted(vars(interpreter).items()) if k != "model" and isinstance(v, plain)
    }


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
        "columns": list(ATTRIBUTION_COLUMNS),  # a folder of another table layout is another run
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


def patient_hash(patient_ids: Sequence[str]) -> str:
    """16 hex digits of a SHA-256 over a shard's patient ids, in order."""
    return hashlib.sha256("\n".join(patient_ids).encode()).hexdigest()[:16]


#: Manifest key of the SHA-256 over the rest of the manifest (:func:`manifest_digest`).
DIGEST_KEY = "digest"


def manifest_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a run manifest's content, every key but :data:`DIGEST_KEY` itself.

    Example:
        >>> record = {"fingerprint": "ab12", "shards": 3}
        >>> manifest_digest(record) == manifest_digest({**record, "digest": "x"})
        True
    """
    content = {k: v for k, v in record.items() if k != DIGEST_KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _write_manifest(path: Path, record: Mapping[str, Any]) -> None:
    sealed = {**record, DIGEST_KEY: manifest_digest(record)}
    with atomic_write(path) as f:
        json.dump(sealed, f, indent=2, sort_keys=True)


def manifest_problem(record: Mapping[str, Any]) -> str:
    """Why a run manifest cannot be trusted (``""`` when its digest matches its content).

    Example:
        >>> manifest_problem(json.loads(Path("attr/_ehrlens_run.json").read_text()))
        ''
    """
    if DIGEST_KEY not in record:
        return "it has no digest (written by an older ehrlens, or edited)"
    if record[DIGEST_KEY] != manifest_digest(record):
        return "its content no longer matches the digest written with it (it was edited)"
    return ""


def _flat(settings: Any, prefix: str = "") -> dict[str, Any]:
    """``{"methods.rollout": ..., "batch_size": 32}``: nested settings as dotted keys."""
    if isinstance(settings, Mapping) and settings:
        out: dict[str, Any] = {}
        for key, value in settings.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): settings}


def settings_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The settings in which two runs differ, one ``key: old -> new`` each (``"(none)"`` if
    they are the same), so that a refused re-run shows what changed, not two whole summaries.

    Example:
        >>> settings_difference({"batch_size": 32, "data": "a"}, {"batch_size": 64, "data": "a"})
        'batch_size: 32 -> 64'
    """
    before, after = _flat(old), _flat(new)
    missing = object()
    lines = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, missing), after.get(key, missing)
        if a != b:
            shown_a = "(not set)" if a is missing else json.dumps(a)
            shown_b = "(not set)" if b is missing else json.dumps(b)
            lines.append(f"{key}: {shown_a} -> {shown_b}")
    return "; ".join(lines) if lines else "(none)"


def claim_output_dir(
    out: Path, fingerprint: str, settings: dict, n_shards: int, left_alone: Sequence[Path] = ()
) -> None:
    """Create ``out`` for this run, or check it holds this run's output; clean stale temps.

    A previous manifest must verify (:func:`manifest_problem`) and name this run and its shard
    count. Without one, shard-named files are refused, except those in ``left_alone`` (files
    ``--overwrite`` did not remove because no run wrote them) whose names this run will not
    write.
    """
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            previous = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise OutputConflictError(f"{manifest}: unreadable run manifest ({error})") from error
        if not isinstance(previous, dict):
            raise OutputConflictError(f"{manifest}: not a run manifest (a JSON object)")
        problem = manifest_problem(previous)
        if problem:
            raise OutputConflictError(
                f"{manifest}: cannot be trusted: {problem}; nothing was changed. Replace that "
                "run with --overwrite (overwrite=True), or write to a new folder."
            )
        if previous.get("fingerprint") != fingerprint:
            old = previous.get("settings", {})
            raise OutputConflictError(
                f"{out} holds attributions of a different run; the settings that differ "
                f"(that run -> this one): {settings_difference(old, settings)}; nothing was "
                "changed. Write to a new folder, or replace that run with --overwrite "
                "(overwrite=True)."
            )
        if previous.get("shards") != n_shards:
            raise OutputConflictError(
                f"{manifest}: lists {previous.get('shards')} shard(s), but this run has "
                f"{n_shards}; nothing was changed. Replace that run with --overwrite."
            )
    else:
        mine = {SHARD_PATTERN.format(i) for i in range(n_shards)}
        spared = {p.name for p in left_alone} - mine
        foreign = [p.name for p in _shard_files(out) if p.name not in spared]
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
        _write_manifest(manifest, record)
    for stale in _temporaries(out):  # left by a killed run of ours
        stale.unlink(missing_ok=True)


_SHARD_NAME = re.compile(r"part-(\d{5})\.parquet")
#: A temporary of :func:`~ehrlens.core.files.atomic_write` for a shard.
_SHARD_TEMP = re.compile(r"\.part-\d{5}\.parquet\.[A-Za-z0-9_]+\.tmp")


def _shard_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("part-*.parquet") if _SHARD_NAME.fullmatch(p.name))


def _temporaries(out: Path) -> list[Path]:
    return sorted(
        p for p in out.glob(".part-*.tmp") if _SHARD_TEMP.fullmatch(p.name) and p.is_file()
    )


def _written_by(path: Path, fingerprint: str | None) -> bool:
    """Whether ``path`` is a regular Parquet file whose own metadata names run ``fingerprint``
    and the shard index in its name."""
    import pyarrow.parquet as pq

    match = _SHARD_NAME.fullmatch(path.name)
    if fingerprint is None or match is None or path.is_symlink() or not path.is_file():
        return False
    try:
        metadata = pq.read_metadata(path).metadata or {}
    except Exception:  # not Parquet, damaged: not known to be ours
        return False
    kv = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in metadata.items()}
    return kv.get("ehrlens.run") == fingerprint and kv.get("ehrlens.shard") == str(
        int(match.group(1))
    )


def clear_run_files(out: Path) -> list[Path]:
    """Remove the previous explain run in ``out``: its manifest, the shard files it wrote and
    their temporaries, nothing else. A shard counts as the run's when the manifest lists it
    (and the manifest verifies) or when the file's own metadata names the run and its index;
    other files, even named ``part-NNNNN.parquet``, are left alone. A folder without a
    manifest is left alone. Returns the removed paths."""
    manifest = out / MANIFEST
    if not manifest.is_file() or manifest.is_symlink():
        return []
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}
    fingerprint = record.get("fingerprint")
    listed: set[str] = set()
    shards = record.get("shards")
    if not manifest_problem(record) and isinstance(shards, int):
        listed = {SHARD_PATTERN.format(i) for i in range(shards)}
    removed = [
        p
        for p in _shard_files(out)
        if (p.name in listed and p.is_file() and not p.is_symlink())
        or _written_by(p, str(fingerprint))
    ]
    removed += _temporaries(out)
    for path in removed:
        path.unlink(missing_ok=True)
    manifest.unlink()
    return [*removed, manifest]


@contextmanager
def claimed_output(
    out: Path, fingerprint: str, settings: dict, n_shards: int, overwrite: bool = False
) -> Iterator[None]:
    """Hold ``out``'s output lock and claim it for this run (:func:`claim_output_dir`) while
    the block runs. ``overwrite=True`` first removes a previous run's manifest and shards
    (:func:`clear_run_files`). If the block fails before any shard exists, the manifest this
    call wrote is removed again (and the folder, if this call created it and it is empty), so
    that a corrected re-run is not refused as a different run.

    Example:
        >>> out = Path("claimed")
        >>> with claimed_output(out, "0" * 16, {"methods": ["rollout"]}, n_shards=1):
        ...     sorted(p.name for p in out.iterdir())
        ['_ehrlens_run.json']
    """
    existed = out.exists()
    with output_lock(out):
        left_alone: list[Path] = []
        if overwrite and existed and (out / MANIFEST).is_file():
            removed = clear_run_files(out)
            left_alone = [p for p in _shard_files(out) if p not in removed]
        had_manifest = (out / MANIFEST).exists()
        claim_output_dir(out, fingerprint, settings, n_shards, left_alone)
        try:
            yield
        except BaseException:
            if not had_manifest and not any(_written_by(p, fingerprint) for p in _shard_files(out)):
                (out / MANIFEST).unlink(missing_ok=True)
                for stale in _temporaries(out):
                    stale.unlink(missing_ok=True)
                if not existed and not any(out.iterdir()):
                    out.rmdir()
            raise


def finish_manifest(out: Path, fingerprint: str, num_rows: int) -> None:
    """Mark the run in ``out`` complete, with its total row count."""
    manifest = out / MANIFEST
    record = json.loads(manifest.read_text())
    record.pop(DIGEST_KEY, None)
    record.update(complete=True, rows=num_rows)
    _write_manifest(manifest, record)


def table_digest(table: Any) -> str:
    """SHA-256 (hex) of an attribution table's column data, independent of how it is chunked.

    Covers, per column of :data:`~ehrlens.explain.table.ATTRIBUTION_COLUMNS` and then per
    identity column the table has, its name and type, which rows are null, and the values:
    the bytes of each string, the little-endian bytes of each number (timestamps as their
    int64 microseconds). A table read back from Parquet has the digest of the one written.

    Example:
        >>> digest = table_digest(pq.read_table("attr/part-00000.parquet"))
        >>> len(digest), digest == table_digest(pq.read_table("attr/part-00000.parquet"))
        (64, True)
    """
    import numpy as np
    import pyarrow as pa

    digest = hashlib.sha256()
    # a shard written before a column existed (``value``) is digested as it was written
    names = [n for n in (*ATTRIBUTION_COLUMNS, *IDENTITY_COLUMNS) if n in table.column_names]
    for name in names:
        column = table.column(name)
        array = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
        digest.update(f"{name}:{array.type}:{len(array)}\0".encode())
        if pa.types.is_timestamp(array.type):
            array = array.cast(pa.int64())
        digest.update(np.packbits(array.is_null().to_numpy(zero_copy_only=False)).tobytes())
        if pa.types.is_string(array.type):
            _, offsets, data = array.buffers()
            ends = np.frombuffer(offsets, dtype=np.int32)[
                array.offset : array.offset + len(array) + 1
            ]
            digest.update((ends - ends[0]).astype("<i4", copy=False).tobytes())
            if data is not None:
                digest.update(memoryview(data)[int(ends[0]) : int(ends[-1])])
        else:
            values = array.fill_null(0).to_numpy(zero_copy_only=False)
            digest.update(values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def _shard_check(path: Path, fingerprint: str, index: int) -> tuple[Any, str]:
    """``(table, "")`` for a complete, intact shard ``index`` of run ``fingerprint``, else
    ``(None, why not)``; reads the whole file to check its content digest."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
    except FileNotFoundError:
        return None, "it is missing"
    except Exception as error:  # damaged file
        return None, f"it is not a readable Parquet file ({error})"
    kv = {k.decode(): v.decode() for k, v in (metadata.metadata or {}).items()}
    expected = {
        "ehrlens.run": fingerprint,
        "ehrlens.shard": str(index),
        "ehrlens.rows": str(metadata.num_rows),
    }
    wrong = [k for k, v in expected.items() if kv.get(k) != v]
    if wrong:
        return None, f"its metadata {wrong} does not name shard {index} of run {fingerprint}"
    if CONTENT_KEY not in kv:
        return None, "it has no content digest (written by an older ehrlens)"
    try:
        table = pq.read_table(path)
    except Exception as error:  # a damaged page
        return None, f"its data cannot be read ({error})"
    if table_digest(table) != kv[CONTENT_KEY]:
        return None, "its data no longer matches the digest written with it (the file changed)"
    return table, ""


def verified_shard_rows(path: Path, fingerprint: str, index: int, patients: str) -> int | None:
    """Rows of a complete shard of this run, or None when it is absent or does not verify
    (metadata: run, index, row count, patients; content: :func:`table_digest`)."""
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
    except Exception:  # damaged file: recompute it
        return None
    kv = {k.decode(): v.decode() for k, v in (metadata.metadata or {}).items()}
    if kv.get("ehrlens.patients") != patients:
        return None
    table, _ = _shard_check(path, fingerprint, index)
    return None if table is None else table.num_rows


def write_shard(path: Path, columns: dict[str, list], metadata: dict[str, str]) -> None:
    """Write one shard's columns as Parquet with ``metadata`` and its content digest,
    atomically."""
    import pyarrow.parquet as pq

    table = columns_to_arrow(columns)
    schema_metadata = dict(table.schema.metadata or {})
    schema_metadata.update({k.encode(): v.encode() for k, v in metadata.items()})
    schema_metadata[CONTENT_KEY.encode()] = table_digest(table).encode()
    table = table.replace_schema_metadata(schema_metadata)
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f)


def read_run_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The run manifest of an explain output folder (fingerprint, settings, shards, ...).

    Raises:
        FileNotFoundError: ``folder`` has no run manifest.
        ValueError: the manifest is not valid JSON.

    Example:
        >>> sorted(read_run_manifest("attr/")["settings"]["methods"])
        ['rollout']
    """
    manifest = Path(folder) / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}; is it a folder written by `explain`?")
    try:
        record = json.loads(manifest.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{manifest}: not valid JSON ({error})") from error
    if not isinstance(record, dict):
        raise ValueError(f"{manifest}: not a run manifest (expected a JSON object)")
    problem = manifest_problem(record)
    if problem:
        raise ValueError(
            f"{manifest}: cannot be trusted: {problem}; run the `ehrlens explain` command that "
            "wrote the folder again with --overwrite"
        )
    return record


def read_attributions(folder: str | os.PathLike) -> Any:
    """The attribution table of a finished run's folder, as a pandas DataFrame.

    Every shard is verified first: its metadata must name this run and its index, and its
    column data must match the digest written with it.

    Raises:
        FileNotFoundError: ``folder`` has no run manifest (not written by an explain run).
        ValueError: the run is unfinished, or a shard it lists is missing or does not verify;
            re-running the same explain call completes or recomputes it.

    Example:
        >>> _ = explain_cohort(model, test_dataset, ["rollout"], out_dir="attr/")  # resumed
        >>> frame = read_attributions("attr/")     # columns ATTRIBUTION_COLUMNS
        >>> list(frame.columns) == list(ATTRIBUTION_COLUMNS)
        True
    """
    import pyarrow as pa

    folder = Path(folder)
    record = read_run_manifest(folder)
    if not record.get("complete"):
        raise ValueError(
            f"{folder}: the explain run is unfinished; run the same `ehrlens explain` command "
            "again to complete it"
        )
    shards = [folder / SHARD_PATTERN.format(i) for i in range(int(record["shards"]))]
    absent = [p.name for p in shards if not p.exists()]
    if absent:
        raise ValueError(f"{folder}: shard file(s) {absent[:3]} are missing; re-run explain")
    tables = []
    for index, path in enumerate(shards):
        table, why = _shard_check(path, str(record.get("fingerprint")), index)
        if table is None:
            raise ValueError(
                f"{path}: does not verify: {why}; run the same `ehrlens explain` command again "
                "to compute it anew"
            )
        tables.append(table)
    extra = folder / SHARD_PATTERN.format(len(shards))
    if _written_by(extra, str(record.get("fingerprint"))):
        raise ValueError(
            f"{folder}: {extra.name} belongs to this run but the manifest lists only "
            f"{len(shards)} shard(s); run the same `ehrlens explain` command again with "
            "--overwrite"
        )
    whole = pa.concat_tables(tables)
    if "rows" in record and record["rows"] != whole.num_rows:
        raise ValueError(
            f"{folder}: the manifest says {record['rows']} rows but its {len(shards)} shard(s) "
            f"hold {whole.num_rows}; run the same `ehrlens explain` command again with "
            "--overwrite"
        )
    return whole.to_pandas()

"""Explain a whole cohort: every patient, every method, into one long-format table.

With ``out_dir`` the table is written as Parquet shards of ``shard_size`` patients each
(``part-00000.parquet``, ...). Each shard is written to a temporary file and renamed into place,
and carries in its Parquet metadata the run's fingerprint (model, data, methods, settings), its
index, its row count, a hash of its patient ids and a digest of its column data. A re-run with
the same arguments verifies each existing shard against that and computes only the missing or
damaged ones, so an interrupted run resumes and ends with exactly the rows of an uninterrupted
one: no duplicates, no gaps. A folder holding another run's output is refused, never
overwritten, and one run at a time writes a folder (:func:`~ehrlens.core.locks.output_lock`).

Example:
    >>> result = explain_cohort(model, test_dataset, ["rollout", "chefer"], out_dir="attr-rc/")
    >>> frame = result.to_frame()        # pandas, columns ATTRIBUTION_COLUMNS
    >>> sorted(set(frame["method"])), frame["patient_id"].nunique()
    (['chefer', 'rollout'], 20)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..core.ids import find_id_clash
from ..core.progress import progress_bar
from ..data.dataset import SampleDataset
from ..data.identity import identity_columns
from ..models.directory import model_fingerprint
from .rows import MethodSpec, build_methods, explain_rows
from .shards import (
    SHARD_PATTERN,
    ExplainResult,
    claimed_output,
    finish_manifest,
    patient_hash,
    run_fingerprint,
    run_settings,
    shard_metadata,
    verified_shard_rows,
    write_shard,
)
from .table import concat_columns


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
    bucket_by_length: bool = False,
    overwrite: bool = False,
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
        bucket_by_length: within each shard, batch patients of similar size together so that
            a long outlier does not pad a batch of short patients to its length; rows stay in
            patient order and each patient's scores are those of an unbucketed run (within
            float rounding; the ``random`` method draws other numbers). Recorded in the run's
            settings, so a folder of an unbucketed run is not resumed by a bucketed one.
        overwrite: replace the previous run's manifest and shards in ``out_dir`` (other
            files are kept) instead of resuming it or refusing a different run.

    Returns:
        :class:`ExplainResult`; ``to_frame()`` gives the table.

    Raises:
        OutputConflictError: ``out_dir`` holds another run's output or foreign shard files.
        OutputLockedError: another run is writing ``out_dir`` (it names the holder).
        ValueError: two samples with the same ``patient_id`` (rows are keyed by it).
        ValueError / TypeError: from the methods, naming the feature and sample.

    Example:
        >>> result = explain_cohort(model, test_dataset, ["rollout", "flow"], out_dir="out/attr",
        ...                         shard_size=8)
        >>> result.reused, result.computed    # the first time
        ([], [0, 1, 2])
        >>> again = explain_cohort(model, test_dataset, ["rollout", "flow"], out_dir="out/attr",
        ...                        shard_size=8)
        >>> again.reused, again.computed      # verified and kept
        ([0, 1, 2], [])
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    clash = find_id_clash(dataset.items, strict=True)
    if clash is not None:
        raise ValueError(clash.describe(f"sample {clash.first}", f"sample {clash.second}"))
    interpreters = build_methods(model, methods)
    schema = model.schema
    model_id = model_id or model_fingerprint(model)
    extra = {"bucket_by_length": True} if bucket_by_length else {}
    settings = run_settings(
        model_id, dataset_fingerprint(dataset), interpreters, batch_size, shard_size,
        target_class_idx, **extra,
    )  # fmt: skip
    fingerprint = run_fingerprint(settings)
    identity = identity_columns(dataset.items)
    n = len(dataset)
    bounds = [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]
    result = ExplainResult(fingerprint=fingerprint)
    out = None if out_dir is None else Path(out_dir)
    claim = (
        None if out is None else claimed_output(out, fingerprint, settings, len(bounds), overwrite)
    )
    with nullcontext() if claim is None else claim:
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
                model_id, schema, bar_iter, bucket_by_length, identity,
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


__all__ = ["dataset_fingerprint", "explain_cohort"]

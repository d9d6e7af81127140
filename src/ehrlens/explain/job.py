"""What every executor does with one unit of work, and the run's bookkeeping around it.

:class:`ShardJob` is decided once, on the driver, from an
:class:`~ehrlens.explain.run.ExplainRun`: fingerprint, identity columns, limits, batching,
bucketing, target. It is picklable; the local executor and each Ray worker call the same
:meth:`ShardJob.explain` on a :class:`~ehrlens.data.sources.SourceShard` (build the unit's
dataset with the run's limits, explain it, rows in patient order) and :meth:`ShardJob.write`
(one verified Parquet shard). :func:`execute` claims the output folder, reuses the shards
that verify and hands the rest to the executor.

Example:
    >>> from ehrlens.data.sources import DatasetSource
    >>> from ehrlens.explain.run import build_methods
    >>> run = ExplainRun(DatasetSource(test), ["rollout"], shard_size=8)
    >>> interpreters = build_methods(model, run.methods)
    >>> job, shards, settings = plan(run, card["model_id"], interpreters, "cpu")
    >>> [len(shard.patient_ids) for shard in shards]      # 20 test patients
    [8, 8, 4]
    >>> columns = job.explain(model, interpreters, shards[0])   # what a worker does
    >>> list(dict.fromkeys(columns["patient_id"])) == list(shards[0].patient_ids)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.ids import find_id_clash
from ..data.sources import SizeLimits, SourceShard
from ..interpret.methods import BaseInterpreter
from .rows import explain_rows
from .run import ExplainRun
from .shards import (
    SHARD_PATTERN,
    ExplainResult,
    claimed_output,
    finish_manifest,
    patient_hash,
    run_fingerprint,
    shard_metadata,
    verified_shard_rows,
    write_shard,
)
from .table import _empty_columns


@dataclass(frozen=True)
class ShardJob:
    """The run as each unit of work needs it (see the module docstring)."""

    fingerprint: str
    model_id: str
    identity: tuple[str, ...]
    limits: SizeLimits
    batch_size: int
    target_class_idx: int | None
    bucket_by_length: bool
    out_dir: str | None

    def explain(
        self,
        model: Any,
        interpreters: Mapping[str, BaseInterpreter],
        shard: SourceShard,
        bar_iter: Any = None,
    ) -> dict[str, list]:
        """The unit's rows: its dataset built with the run's processors and limits, explained
        ``batch_size`` patients at a time (bucketed when the run says so)."""
        dataset = shard.dataset(model.schema, self.limits)
        if len(dataset) == 0:
            return _empty_columns(self.identity)
        return explain_rows(
            model, dataset, interpreters, range(len(dataset)), self.batch_size,
            self.target_class_idx, self.model_id, model.schema, bar_iter,
            self.bucket_by_length, self.identity,
        )  # fmt: skip

    def path(self, shard: SourceShard) -> Path:
        if self.out_dir is None:
            raise ValueError("the run has no out_dir to write shards to")
        return Path(self.out_dir) / SHARD_PATTERN.format(shard.index)

    def write(self, shard: SourceShard, columns: dict[str, list]) -> Path:
        """Write the unit's rows as its Parquet shard, verified later by the unit's ids."""
        path = self.path(shard)
        write_shard(
            path, columns, shard_metadata(self.fingerprint, shard.index, columns, shard.patient_ids)
        )
        return path


def plan(
    run: ExplainRun,
    model_id: str,
    interpreters: Mapping[str, BaseInterpreter],
    device: str,
) -> tuple[ShardJob, list[SourceShard], dict[str, Any]]:
    """``(job, units, settings)`` of ``run`` (read on the driver: ids, identity, digest).

    Raises:
        ValueError: two units hold the same patient id.
    """
    shards = run.source.shards(run.shard_size)
    ids = [{"patient_id": pid} for shard in shards for pid in shard.patient_ids]
    clash = find_id_clash(ids, strict=True)
    if clash is not None:
        raise ValueError(
            clash.describe(f"sample {clash.first}", f"sample {clash.second}")
            + "; attribution rows are keyed by patient_id, so each patient must have one sample"
        )
    settings = run.settings(model_id, interpreters, device)
    job = ShardJob(
        fingerprint=run_fingerprint(settings),
        model_id=model_id,
        identity=tuple(run.source.identity()),
        limits=run.limits,
        batch_size=run.batch_size,
        target_class_idx=run.target_class_idx,
        bucket_by_length=run.bucket_by_length,
        out_dir=None if run.out_dir is None else str(run.out_dir),
    )
    return job, shards, settings


def execute(
    run: ExplainRun,
    job: ShardJob,
    shards: list[SourceShard],
    settings: dict[str, Any],
    compute: Callable[[list[SourceShard]], Iterable[tuple[int, int]]],
) -> ExplainResult:
    """Claim ``run.out_dir``, reuse every unit whose shard verifies, and have ``compute``
    write the others (it yields ``(index, rows)`` per written shard); then mark the run
    complete. The lock is held throughout.

    Raises:
        RuntimeError: ``compute`` did not write every unit it was given.
    """
    out = Path(str(run.out_dir))
    result = ExplainResult(fingerprint=job.fingerprint, num_patients=patient_count(shards))
    with claimed_output(out, job.fingerprint, settings, len(shards), run.overwrite):
        todo = []
        for shard in shards:
            path = job.path(shard)
            result.shards.append(path)
            done = verified_shard_rows(
                path, job.fingerprint, shard.index, patient_hash(shard.patient_ids)
            )
            if done is None:
                todo.append(shard)
            else:
                result.reused.append(shard.index)
                result.num_rows += done
        written = dict(compute(todo)) if todo else {}
        missing = {s.index for s in todo} - set(written)
        if missing:
            raise RuntimeError(f"shards {sorted(missing)} produced no output")
        result.computed.extend(sorted(written))
        result.num_rows += int(sum(written.values()))
        finish_manifest(out, job.fingerprint, result.num_rows)
    return result


def patient_count(shards: Iterable[SourceShard]) -> int:
    """Patients the units hold, as the source knows them."""
    return sum(len(shard.patient_ids) for shard in shards)


__all__ = ["ShardJob", "execute", "patient_count", "plan"]

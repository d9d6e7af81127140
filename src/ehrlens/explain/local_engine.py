"""The local executor: an :class:`~ehrlens.explain.run.ExplainRun` in this process.

With ``out_dir`` the table is written as Parquet shards, one per unit of the source
(``part-00000.parquet``, ...). Each shard is written to a temporary file and renamed into
place, and carries in its Parquet metadata the run's fingerprint (model, data, methods,
settings), its index, its row count, a hash of its patient ids and a digest of its column
data. A re-run of the same spec verifies each existing shard against that and computes only
the missing or damaged ones, so an interrupted run resumes and ends with exactly the rows of
an uninterrupted one: no duplicates, no gaps. A folder holding another run's output is
refused, never overwritten, and one run at a time writes a folder
(:func:`~ehrlens.core.locks.output_lock`). The Ray executor writes the same folder.

Example:
    >>> result = explain_cohort(model, test_dataset, ["rollout", "chefer"], out_dir="attr-rc/")
    >>> frame = result.to_frame()        # pandas, columns ATTRIBUTION_COLUMNS
    >>> sorted(set(frame["method"])), frame["patient_id"].nunique()
    (['chefer', 'rollout'], 20)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core.progress import progress_bar
from ..data.dataset import SampleDataset
from ..data.sources import DatasetSource, SourceShard, dataset_fingerprint
from ..metrics.faithfulness import model_device
from ..models.directory import load_model_dir, model_fingerprint
from .job import execute, patient_count, plan
from .run import ExplainRun, MethodSpec, build_methods
from .shards import ExplainResult
from .table import concat_columns


class LocalExecutor:
    """Runs an :class:`~ehrlens.explain.run.ExplainRun` in this process, unit by unit.

    Args:
        progress: show a progress bar over batches.
        on_shard: called as ``on_shard(index, path)`` after each shard is written.

    Example:
        >>> from ehrlens.data.sources import DatasetSource
        >>> run = ExplainRun(DatasetSource(test), ["rollout"], model_dir="model/",
        ...                  out_dir="explained/")
        >>> result = LocalExecutor().run(run)     # the model loaded from run.model_dir
        >>> result.num_patients, result.computed
        (20, [0])
        >>> LocalExecutor().run(run).reused       # the same run again: its shard is reused
        [0]
        >>> in_memory = ExplainRun(DatasetSource(test), ["rollout"])   # no out_dir
        >>> result = LocalExecutor().run(in_memory, model=model)   # a model object
        >>> sorted(result.to_frame()["patient_id"].unique())[:2]
        ['P000110', 'P000111']
    """

    def __init__(
        self, progress: bool = False, on_shard: Callable[[int, Path], None] | None = None
    ) -> None:
        self.progress = progress
        self.on_shard = on_shard

    def run(self, run: ExplainRun, model: Any = None) -> ExplainResult:
        """Explain every unit of ``run.source`` with every method.

        Args:
            run: the spec.
            model: the model to explain; default loaded from ``run.model_dir``. It is moved
                to ``run.device`` when one is given.

        Returns:
            :class:`~ehrlens.explain.ExplainResult`; ``to_frame()`` gives the table.

        Raises:
            OutputConflictError: ``out_dir`` holds another run's output or foreign shards.
            OutputLockedError: another run is writing ``out_dir`` (it names the holder).
            ValueError: two samples with the same ``patient_id``, or a sample over the
                run's limits (naming it).
        """
        model_id = run.model_id
        if model is None:
            if run.model_dir is None:
                raise ValueError("the run names no model_dir and no model was given")
            model, card = load_model_dir(run.model_dir, expected_sha256=run.model_sha256)
            model_id = model_id or card.get("model_id")
        if run.device is not None:
            model = model.to(run.device)
        device = str(model_device(model) or "cpu")
        model_id = model_id or model_fingerprint(model)
        interpreters = build_methods(model, run.methods)
        job, shards, settings = plan(run, model_id, interpreters, device)
        batches = sum(math.ceil(len(s.patient_ids) / run.batch_size) for s in shards)
        bar = progress_bar(range(batches), self.progress, desc="explain", unit="batch")
        bar_iter = iter(bar)
        try:
            if run.out_dir is None:
                parts = [job.explain(model, interpreters, shard, bar_iter) for shard in shards]
                result = ExplainResult(
                    fingerprint=job.fingerprint, num_patients=patient_count(shards)
                )
                result._columns = concat_columns(parts)
                result.computed = [s.index for s in shards]
                result.num_rows = len(result._columns["patient_id"])
                return result

            def compute(todo: list[SourceShard]) -> Iterator[tuple[int, int]]:
                todo_set = {s.index for s in todo}
                for shard in shards:
                    if shard.index not in todo_set:  # reused: its batches count as done
                        for _ in range(math.ceil(len(shard.patient_ids) / run.batch_size)):
                            next(bar_iter, None)
                        continue
                    columns = job.explain(model, interpreters, shard, bar_iter)
                    path = job.write(shard, columns)
                    if self.on_shard is not None:
                        self.on_shard(shard.index, path)
                    yield shard.index, len(columns["patient_id"])

            return execute(run, job, shards, settings, compute)
        finally:
            if hasattr(bar, "close"):
                bar.close()


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
    """Explain every patient of a processed ``dataset`` with every method: an
    :class:`~ehrlens.explain.run.ExplainRun` over a
    :class:`~ehrlens.data.sources.DatasetSource`, run by :class:`LocalExecutor`.

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
    run = ExplainRun(
        DatasetSource(dataset), methods, out_dir=out_dir, overwrite=overwrite,
        batch_size=batch_size, shard_size=shard_size, bucket_by_length=bucket_by_length,
        target_class_idx=target_class_idx, model_id=model_id,
    )  # fmt: skip
    return LocalExecutor(progress, on_shard).run(run, model=model)


__all__ = ["LocalExecutor", "dataset_fingerprint", "explain_cohort"]

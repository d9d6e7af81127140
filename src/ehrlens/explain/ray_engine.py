"""The Ray executor: an :class:`~ehrlens.explain.run.ExplainRun` on Ray Data, across the cores
of one machine or the nodes of a cluster. Extra ``ehrlens[ray]``; Ray is imported only when a
function here is called.

How it runs:

1. The driver asks the run's source for its units (:meth:`~ehrlens.data.sources.SampleSource.
   shards`): the same units, in the same order, as the local executor, so the output
   folder, the fingerprint and the rows are the same. JSON Lines are scanned once for ids
   (each unit then reads its own lines by byte span), MEDS folders only for the subjects of
   each data shard and the labels; nothing else is read on the driver.
2. Units whose shard file already verifies (run fingerprint, index, row count, patient ids,
   content digest) are reused; nothing is assumed from a file's existence.
3. The other units go, one per call, to an actor pool (``map_batches``): each actor loads the
   model directory once onto the run's device, rebuilds the methods, and runs the same
   :class:`~ehrlens.explain.job.ShardJob` as the local executor: the unit's dataset built with
   the run's limits, explained with its batching and bucketing, one Parquet shard written
   atomically.

The driver holds the output folder's lock (:func:`~ehrlens.core.locks.output_lock`) for the
whole run, so a second run into the same folder, with either executor, is refused while this
one writes.

Example (paths every worker can read: absolute, on a cluster on a shared file system):
    >>> here = Path.cwd()
    >>> few = JsonlSource(here / "patients.jsonl", patients=["P000110", "P000111", "P000112"])
    >>> run = ExplainRun(few, ["rollout", "flow"], model_dir=here / "model",
    ...                  out_dir=here / "explained", shard_size=2)
    >>> result = RayExecutor(num_workers=1).run(run)   # one actor per unit, one at a time
    >>> result.computed, sorted(result.to_frame()["method"].unique())
    ([0, 1], ['flow', 'rollout'])
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..data.sources import JsonlSource, SampleSource, SamplesSource, SizeLimits, SourceShard
from .job import ShardJob, execute, plan
from .run import ExplainRun, MethodRecipe, MethodSpec, build_methods, device_type, rebuild_methods
from .shards import ExplainResult


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError("the Ray engine needs Ray Data: pip install 'ehrlens[ray]'") from error
    return ray


#: Ray settings of a local runtime started by :func:`init_ray`: workers at the starting
#: process's priority (Ray's own default is niceness 15).
LOCAL_WORKER_CONFIG = {"worker_niceness": 0}


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> None:
    """Connect to the Ray cluster at ``address``, or start a local runtime on ``num_cpus``
    cores (default: all). Does nothing when Ray is already initialised. ``quiet``: Ray's
    own loggers (``ray``, ``ray.data``) report errors only.

    A local runtime's workers run at the priority of the process that starts them
    (:data:`LOCAL_WORKER_CONFIG`): Ray's default starts workers at niceness 15, so on a
    machine busy with anything else the explanation would wait behind it.

    Example:
        >>> init_ray()          # this machine's cores; a cluster: init_ray("ray://head:10001")
    """
    ray = _ray()
    if quiet:
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    level = {"logging_level": logging.ERROR} if quiet else {}
    if address is not None:
        ray.init(address=address, log_to_driver=False, **level)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            _system_config=dict(LOCAL_WORKER_CONFIG),
            **level,
        )


class ShardWorker:
    """Ray Data callable class: loads the model once per actor, explains one unit per call.

    Each call gets one row: a unit's index and the pickled
    :class:`~ehrlens.data.sources.SourceShard`; it writes ``part-<index>.parquet`` with
    :meth:`~ehrlens.explain.job.ShardJob.write` and returns ``{"shard", "rows"}``.
    """

    def __init__(
        self,
        model_dir: str,
        methods: Mapping[str, MethodRecipe],
        job: ShardJob,
        device: str,
        model_sha256: str | None = None,
        threads: int = 1,
    ) -> None:
        import torch

        from ..models.directory import load_model_dir

        torch.set_num_threads(max(1, int(threads)))
        model, _ = load_model_dir(model_dir, expected_sha256=model_sha256)
        self.model = model.to(device)  # batches follow the model's device (explain.rows)
        self.interpreters = rebuild_methods(self.model, methods)
        self.job = job

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        if len(batch) != 1:
            raise RuntimeError(f"expected one unit per call, got {len(batch)}")
        shard: SourceShard = pickle.loads(batch["unit"].iloc[0])
        columns = self.job.explain(self.model, self.interpreters, shard)
        self.job.write(shard, columns)
        return pd.DataFrame({"shard": [shard.index], "rows": [len(columns["patient_id"])]})


class RayExecutor:
    """Runs an :class:`~ehrlens.explain.run.ExplainRun` with Ray Data; the same rows and
    output folder as :class:`~ehrlens.explain.local_engine.LocalExecutor`.

    Args:
        address: Ray cluster address; ``None`` starts a local runtime on this machine's cores
            (or uses the one already started).
        num_workers: actors (default: the cluster's CPUs, or its GPUs on a GPU run).
        num_gpus_per_worker: GPUs per actor; default 1 when the run's device is CUDA, else 0.
        progress: Ray Data's progress bars.
        quiet: start a local Ray runtime that logs only errors.

    Example:
        >>> from ehrlens.explain import LocalExecutor
        >>> here = Path.cwd()       # workers read and write here too: absolute paths
        >>> few = JsonlSource(here / "patients.jsonl", patients=["P000110", "P000111"])
        >>> run = ExplainRun(few, ["rollout"], model_dir=here / "model",
        ...                  out_dir=here / "explained")
        >>> LocalExecutor().run(run).computed      # this process writes shard 0 ...
        [0]
        >>> RayExecutor(num_workers=4).run(run).reused   # ... Ray verifies it and reuses it
        [0]
    """

    def __init__(
        self,
        address: str | None = None,
        num_workers: int | None = None,
        num_gpus_per_worker: float | None = None,
        progress: bool = False,
        quiet: bool = False,
    ) -> None:
        self.address = address
        self.num_workers = num_workers
        self.num_gpus_per_worker = num_gpus_per_worker
        self.progress = progress
        self.quiet = quiet

    def run(self, run: ExplainRun) -> ExplainResult:
        """Explain every unit of ``run.source`` on the Ray workers.

        Raises:
            ValueError: the run has no ``model_dir`` or ``out_dir`` (workers load the one and
                write the other), its device and the GPUs requested disagree, duplicate
                patient ids, or bad input (from the readers and processors, as locally).
            TypeError: a method's class cannot be imported by name on the workers.
            OutputConflictError / OutputLockedError: as locally.
        """
        ray = _ray()
        from ..models.directory import load_model_dir

        if run.model_dir is None or run.out_dir is None:
            raise ValueError(
                "the Ray executor needs the run's model_dir (each worker loads it) and out_dir "
                "(each worker writes its shards there)"
            )
        model, card = load_model_dir(run.model_dir, expected_sha256=run.model_sha256)
        interpreters = build_methods(model, run.methods)  # checks the methods here first
        recipes = run.method_recipes()
        init_ray(self.address, None if self.address else self.num_workers, self.quiet)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = bool(self.progress)
        context.raise_original_map_exception = True  # a worker's ValueError stays a ValueError
        device, gpus = worker_device(
            run.device, self.num_gpus_per_worker, ray.cluster_resources().get("GPU", 0)
        )
        model_id = run.model_id or card.get("model_id") or ""
        job, shards, settings = plan(run, model_id, interpreters, device)

        def compute(todo: list[SourceShard]) -> Iterator[tuple[int, int]]:
            workers = self.num_workers or _default_workers(ray, gpus)
            workers = max(1, min(workers, len(todo)))
            units = [{"shard": s.index, "unit": pickle.dumps(s)} for s in todo]
            summary = _run_unwrapped(
                lambda: (
                    ray.data.from_items(units)
                    .map_batches(
                        ShardWorker,
                        batch_size=1,
                        batch_format="pandas",
                        concurrency=workers,
                        num_cpus=1,
                        num_gpus=gpus,
                        fn_constructor_kwargs={
                            "model_dir": str(run.model_dir),
                            "methods": recipes,
                            "job": job,
                            "device": device,
                            "model_sha256": run.model_sha256,
                        },
                    )
                    .to_pandas()
                )
            )
            yield from zip(summary["shard"].tolist(), summary["rows"].tolist(), strict=True)

        return execute(run, job, shards, settings, compute)


def worker_device(
    requested: str | None, gpus_per_worker: float | None, cluster_gpus: float
) -> tuple[str, float]:
    """``(device, GPUs per actor)`` of a Ray run: the run's device decides, and the GPUs
    reserved follow it (none for a CPU run); with no device, the GPU when the cluster has one.

    Raises:
        ValueError: a CUDA device with no GPU per actor, or GPUs reserved for a CPU run.

    Example:
        >>> worker_device(None, None, cluster_gpus=4)
        ('cuda', 1.0)
        >>> worker_device("cpu", None, cluster_gpus=4)
        ('cpu', 0.0)
    """
    if requested is None:
        if gpus_per_worker is not None:
            requested = "cuda" if gpus_per_worker > 0 else "cpu"
        else:
            requested = "cuda" if cluster_gpus > 0 else "cpu"
    cuda = device_type(requested) == "cuda"
    gpus = float(gpus_per_worker) if gpus_per_worker is not None else (1.0 if cuda else 0.0)
    if cuda and gpus <= 0:
        raise ValueError(
            f"device {requested!r} with num_gpus_per_worker={gpus_per_worker}: each worker "
            "needs a GPU to explain on CUDA"
        )
    if not cuda and gpus > 0:
        raise ValueError(
            f"device {requested!r} with num_gpus_per_worker={gpus_per_worker}: GPUs would be "
            "reserved for a CPU run; drop num_gpus_per_worker or choose device='cuda'"
        )
    return requested, gpus


def explain_cohort_ray(
    model_dir: str | os.PathLike,
    data: Any,
    methods: MethodSpec = ("rollout",),
    *,
    out_dir: str | os.PathLike,
    batch_size: int = 64,
    shard_size: int = 1000,
    target_class_idx: int | None = None,
    address: str | None = None,
    num_workers: int | None = None,
    num_gpus_per_worker: float | None = None,
    progress: bool = False,
    model_sha256: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    device: str | None = None,
    bucket_by_length: bool = False,
    limits: SizeLimits | None = None,
) -> ExplainResult:
    """Explain every patient with Ray Data: an :class:`~ehrlens.explain.run.ExplainRun`
    over ``data`` run by :class:`RayExecutor`.

    Args:
        model_dir: model directory (``ehrlens train`` /
            :func:`~ehrlens.models.directory.save_model_dir`) readable from every worker.
        data: a :class:`~ehrlens.data.sources.SampleSource`, a JSON Lines path, or a list of
            samples.
        methods: names, ``{name: options}`` or ``{name: interpreter}``. Every worker rebuilds
            each method on its own copy of the model, an instance ``i`` as
            ``type(i)(model, **i.get_params())``, so the class must be importable there.
        out_dir: output folder, writable from every worker.
        batch_size / shard_size / target_class_idx / overwrite / bucket_by_length / device /
            limits / model_sha256: as in :class:`~ehrlens.explain.run.ExplainRun`.
        address / num_workers / num_gpus_per_worker / progress / quiet: as in
            :class:`RayExecutor`.

    Returns:
        :class:`~ehrlens.explain.ExplainResult` over the shard files.

    Example:
        >>> here = Path.cwd()       # workers read and write here too: absolute paths
        >>> result = explain_cohort_ray(here / "model", samples[110:114], ["flow"],
        ...                             out_dir=here / "flow")
        >>> result.computed, result.reused, result.num_patients
        ([0], [], 4)
    """
    run = ExplainRun(
        as_source(data), methods, model_dir=model_dir, model_sha256=model_sha256,
        out_dir=out_dir, overwrite=overwrite, batch_size=batch_size, shard_size=shard_size,
        bucket_by_length=bucket_by_length, target_class_idx=target_class_idx, device=device,
        limits=limits or SizeLimits(),
    )  # fmt: skip
    executor = RayExecutor(address, num_workers, num_gpus_per_worker, progress, quiet)
    return executor.run(run)


def as_source(data: Any) -> SampleSource:
    """A :class:`~ehrlens.data.sources.SampleSource` as given, a JSON Lines path, or samples.

    Raises:
        ValueError: a path that is not JSON Lines (event tables and MEDS folders need their
            schema: build :class:`~ehrlens.data.sources.EventTableSource` /
            :class:`~ehrlens.data.sources.MedsSource`).
    """
    if isinstance(data, SampleSource):
        return data
    if isinstance(data, (str, os.PathLike)):
        from ..data.sources import JSONL_SUFFIXES

        if not str(data).lower().endswith(JSONL_SUFFIXES):
            raise ValueError(
                f"{data}: give JSON Lines, or a source for other inputs (EventTableSource, "
                "MedsSource)"
            )
        return JsonlSource(data)
    if isinstance(data, Sequence):
        return SamplesSource(data)
    raise TypeError(f"cannot read patients from {type(data).__name__}")


def _run_unwrapped(step: Any) -> Any:
    """Run a Ray Data step; re-raise a worker's ValueError / TypeError / KeyError as itself, so
    callers see the same error as in a single process, not Ray's wrapper."""
    try:
        return step()
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, (ValueError, TypeError, KeyError)) and type(cause).__module__ in (
                "builtins",
            ):
                raise type(cause)(*cause.args) from error
            cause = getattr(cause, "cause", None) or cause.__cause__
        raise


def _default_workers(ray: Any, gpus: float) -> int:
    resources = ray.cluster_resources()
    if gpus > 0:
        return max(1, int(resources.get("GPU", 1) // gpus))
    return max(1, int(resources.get("CPU", 1)))


__all__ = [
    "RayExecutor",
    "ShardWorker",
    "as_source",
    "explain_cohort_ray",
    "init_ray",
    "worker_device",
]

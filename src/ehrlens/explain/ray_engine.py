"""Explain a cohort with Ray Data across the cores of one machine or the nodes of a cluster.

Extra ``ehrlens[ray]``; Ray is imported only when a function here is called.

How it runs:

1. Patients are read with Ray Data, once (JSON Lines samples with ``read_text``; an event
   table is turned into samples on the driver with :func:`~ehrlens.data.events.from_events`,
   since building a patient needs the table's row order; in-memory samples with
   ``from_items``). The driver takes only the patient ids, in input order, and assigns
   patient ``i`` to shard ``i // shard_size``: the same shards as the single-process
   :func:`~ehrlens.explain.explain_cohort`, so the rows are the same.
2. Shards whose output file already verifies (run fingerprint, shard index, row count and a
   hash of the shard's patient ids, read from the Parquet metadata, and the digest of its
   column data) are filtered out; nothing is assumed from a file's existence.
3. ``groupby("shard")`` packs each shard into one row; ``map_batches`` then runs a callable
   class in an actor pool, one shard per call: each worker loads the model directory once,
   explains its shards with the single-process code path (one thread per worker) and writes
   one Parquet file per shard atomically (temporary file + rename).

A re-run after an interruption therefore recomputes only the missing shards and never
duplicates a row. The driver holds the output folder's lock
(:func:`~ehrlens.core.locks.output_lock`) for the whole run, so a second run into the same
folder, with either engine, is refused while this one writes. Output folder, file names,
columns and metadata are those of :func:`~ehrlens.explain.explain_cohort`, except that the
fingerprint covers the input file's bytes instead of the processed tensors, so a folder
written by one engine is refused by the other instead of being mixed.

Example:
    >>> result = explain_cohort_ray("model/", "patients.jsonl", ["rollout", "flow"],
    ...                             out_dir="attr/", num_workers=8)
    >>> result.to_frame()
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.files import file_sha256
from ..interpret.methods import BaseInterpreter
from ..interpret.registry import class_path, load_class
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


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError("the Ray engine needs Ray Data: pip install 'ehrlens[ray]'") from error
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> None:
    """Connect to the Ray cluster at ``address``, or start a local runtime on ``num_cpus``
    cores (default: all). Does nothing when Ray is already initialised. ``quiet``: Ray's
    own loggers (``ray``, ``ray.data``) report errors only.

    Example:
        >>> init_ray("ray://head:10001")   # or init_ray() for this machine's cores
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
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **level)


#: How a method travels to the workers: ``(class path "module:qualname", constructor options)``.
MethodRecipe = tuple[str, dict[str, Any]]


class ShardExplainer:
    """Ray Data callable class: loads the model once per worker, explains one shard per call.

    ``methods`` is ``{name: (class path, options)}`` (:func:`method_recipes`): each method is
    rebuilt as ``cls(model, **options)`` on the worker's own model. Each call gets one row: a
    shard index and its samples (JSON, in input order); it writes ``part-<shard>.parquet``
    and returns ``{"shard", "rows"}``.
    """

    def __init__(
        self,
        model_dir: str,
        methods: Mapping[str, MethodRecipe],
        out_dir: str,
        fingerprint: str,
        batch_size: int,
        target_class_idx: int | None,
        model_id: str,
        threads: int = 1,
        model_sha256: str | None = None,
        device: str = "cpu",
    ) -> None:
        import torch

        from ..models.directory import load_model_dir

        torch.set_num_threads(max(1, int(threads)))
        model, _ = load_model_dir(model_dir, expected_sha256=model_sha256)
        self.model = model.to(device)  # batches follow the model's device (explain.rows)
        self.interpreters = rebuild_methods(self.model, methods)
        self.out_dir = Path(out_dir)
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.target = target_class_idx
        self.model_id = model_id

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        from ..data import create_sample_dataset

        if len(batch) != 1:
            raise RuntimeError(f"expected one shard per call, got {len(batch)}")
        index = int(batch["shard"].iloc[0])
        samples = [json.loads(text) for text in json.loads(batch["samples"].iloc[0])]
        try:
            dataset = create_sample_dataset(samples, schema=self.model.schema)
        except (ValueError, TypeError) as error:
            first, last = samples[0].get("patient_id"), samples[-1].get("patient_id")
            raise type(error)(
                f"shard {index} (patients {first} to {last}; sample numbers count from "
                f"{first}): {error}"
            ) from error
        columns = explain_rows(
            self.model, dataset, self.interpreters, range(len(dataset)), self.batch_size,
            self.target, self.model_id, self.model.schema,
        )  # fmt: skip
        patient_ids = [str(s["patient_id"]) for s in samples]
        path = self.out_dir / SHARD_PATTERN.format(index)
        write_shard(path, columns, shard_metadata(self.fingerprint, index, columns, patient_ids))
        return pd.DataFrame({"shard": [index], "rows": [len(columns["patient_id"])]})


def _samples_dataset(data: Any, input_schema: Mapping[str, str], columns: Any) -> tuple[Any, str]:
    """A Ray Dataset with one row per patient (``patient_id``, ``sample`` as JSON), and a
    fingerprint of the input."""
    ray = _ray()
    from ..core.jsonl import plain_json
    from ..data.events import from_events
    from ..data.sources import JSONL_SUFFIXES, TABLE_SUFFIXES

    def as_rows(samples: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        return [
            {"patient_id": str(s["patient_id"]), "sample": json.dumps(plain_json(s))}
            for s in samples
        ]

    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        digest = file_sha256(path)[:16]
        if path.name.lower().endswith(JSONL_SUFFIXES):
            return ray.data.read_text(str(path)).flat_map(_parse_line), digest
        if path.name.lower().endswith(TABLE_SUFFIXES):
            samples = from_events(path, input_schema, columns=columns)
            return ray.data.from_items(as_rows(samples)), digest
        raise ValueError(f"{path}: expected JSON Lines or an event table (.parquet, .csv)")
    samples = list(data)
    text = "\n".join(json.dumps(plain_json(s), sort_keys=True) for s in samples)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return ray.data.from_items(as_rows(samples)), digest


def _parse_line(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One JSON Lines row -> ``[{"patient_id", "sample"}]`` (``[]`` for a blank line)."""
    if not row["text"].strip():
        return []
    sample = json.loads(row["text"])
    if not isinstance(sample, dict) or "patient_id" not in sample:
        raise ValueError(
            f"expected one JSON object with a patient_id per line, got {row['text'][:80]!r}"
        )
    return [{"patient_id": str(sample["patient_id"]), "sample": row["text"]}]


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
    columns: Mapping[str, Sequence[str]] | None = None,
    progress: bool = False,
    model_sha256: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> ExplainResult:
    """Explain every patient with Ray Data; write the same shards as
    :func:`~ehrlens.explain.explain_cohort`.

    Args:
        model_dir: model directory (``ehrlens train`` /
            :func:`~ehrlens.models.directory.save_model_dir`)
            readable from every worker (a shared file system on a cluster).
        data: JSON Lines path, event-table path (``.parquet`` / ``.csv``), or a list of samples.
        methods: as in :func:`~ehrlens.explain.explain_cohort`: names, ``{name: options}`` or
            ``{name: interpreter}``. Every worker rebuilds each method on its own copy of the
            model, an instance ``i`` as ``type(i)(model, **i.get_params())``, so the class must
            be importable there (defined at the top level of a module, not in ``__main__``).
        out_dir: output folder, writable from every worker.
        batch_size / shard_size / target_class_idx: as in the single-process run.
        address: Ray cluster address; ``None`` starts a local runtime on this machine's cores.
        num_workers: actors (default: the cluster's CPUs, or GPUs when ``num_gpus_per_worker``).
        num_gpus_per_worker: GPUs per actor; default 1 when the cluster has GPUs, else 0.
            With GPUs, each actor moves its model to its GPU (``"cuda"``) and explains there.
        columns: measurement names of numeric features, for event tables.
        progress: Ray Data's progress bars.
        model_sha256: SHA-256 of ``model.pt`` that the driver and every worker verify
            before loading it (see :meth:`~ehrlens.models.BaseModel.load`).
        overwrite: as in :func:`~ehrlens.explain.explain_cohort`.
        quiet: start a local Ray runtime that logs only errors.

    Returns:
        :class:`~ehrlens.explain.ExplainResult` over the shard files.

    Raises:
        OutputConflictError: ``out_dir`` holds another run's output.
        OutputLockedError: another run is writing ``out_dir`` (it names the holder).
        ValueError: duplicate patient ids, or bad input (from the readers and processors).
        TypeError: a method's class cannot be imported by name on the workers.

    Example:
        >>> result = explain_cohort_ray("model/", "patients.jsonl", ["flow"], out_dir="attr/")
        >>> result.computed, result.reused
    """
    ray = _ray()
    from ..models.directory import load_model_dir

    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    model, card = load_model_dir(model_dir, expected_sha256=model_sha256)
    interpreters = build_methods(model, methods)
    options = method_recipes(methods, interpreters)
    init_ray(address, num_cpus=None if address is not None else num_workers, quiet=quiet)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = bool(progress)
    context.raise_original_map_exception = True  # a worker's ValueError stays a ValueError

    rows, data_digest = _samples_dataset(data, model.schema.input_schema, columns)
    rows = _run_unwrapped(rows.materialize)  # read once: for the ids here and the shards below
    order = rows.select_columns(["patient_id"]).to_pandas()["patient_id"].tolist()
    duplicates = len(order) - len(set(order))
    if duplicates:
        first: dict[str, int] = {}
        again = next(i for i, pid in enumerate(order) if first.setdefault(pid, i) != i)
        raise ValueError(
            f"{duplicates} duplicate patient id(s) in the input, e.g. sample {again} repeats "
            f"patient_id {order[again]!r} of sample {first[order[again]]} (ids are compared "
            "as text); ids must be unique"
        )
    model_id = card.get("model_id") or ""
    settings = run_settings(
        model_id, data_digest, interpreters, batch_size, shard_size, target_class_idx,
        engine="ray",
    )  # fmt: skip
    fingerprint = run_fingerprint(settings)
    out = Path(out_dir)
    n_shards = math.ceil(len(order) / shard_size)
    with claimed_output(out, fingerprint, settings, n_shards, overwrite):
        result = ExplainResult(fingerprint=fingerprint)
        todo = []
        for index in range(n_shards):
            ids = order[index * shard_size : (index + 1) * shard_size]
            path = out / SHARD_PATTERN.format(index)
            result.shards.append(path)
            done = verified_shard_rows(path, fingerprint, index, patient_hash(ids))
            if done is None:
                todo.append(index)
            else:
                result.reused.append(index)
                result.num_rows += done
        if todo:
            position = ray.put({pid: i for i, pid in enumerate(order)})
            wanted = set(todo)
            gpus = _gpus_per_worker(ray, num_gpus_per_worker)
            workers = num_workers or _default_workers(ray, gpus)
            workers = max(1, min(workers, len(todo)))
            # Group each shard's patients into one row first (plain tasks, materialised), so the
            # actor pool below never waits on a shuffle that needs the CPUs the actors hold.
            shards = _run_unwrapped(
                lambda: (
                    rows.map_batches(
                        _assign_shards,
                        batch_format="pandas",
                        fn_kwargs={
                            "positions": position,
                            "shard_size": shard_size,
                            "wanted": wanted,
                        },
                    )
                    .groupby("shard")
                    .map_groups(_pack_shard, batch_format="pandas")
                    .materialize()
                )
            )
            summary = _run_unwrapped(
                lambda: shards.map_batches(
                    ShardExplainer,
                    batch_size=1,
                    batch_format="pandas",
                    concurrency=workers,
                    num_cpus=1,
                    num_gpus=gpus,
                    fn_constructor_kwargs={
                        "model_dir": str(model_dir),
                        "methods": options,
                        "out_dir": str(out),
                        "fingerprint": fingerprint,
                        "batch_size": batch_size,
                        "target_class_idx": target_class_idx,
                        "model_id": model_id,
                        "device": "cuda" if gpus > 0 else "cpu",
                        "model_sha256": model_sha256,
                    },
                ).to_pandas()
            )
            written = dict(zip(summary["shard"].tolist(), summary["rows"].tolist(), strict=True))
            missing = wanted - set(written)
            if missing:
                raise RuntimeError(f"shards {sorted(missing)} produced no output")
            result.computed.extend(sorted(written))
            result.num_rows += int(sum(written.values()))
        finish_manifest(out, fingerprint, result.num_rows)
    return result


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


def _assign_shards(batch: Any, positions: Any, shard_size: int, wanted: set[int]) -> Any:
    if not isinstance(positions, dict):  # an ObjectRef: fetched once per task
        positions = _ray().get(positions)
    batch = batch.copy()
    batch["position"] = [positions[pid] for pid in batch["patient_id"]]
    batch["shard"] = [p // shard_size for p in batch["position"]]
    return batch[batch["shard"].isin(wanted)]


def _pack_shard(group: Any) -> Any:
    """One shard's rows -> one row: the shard index and its samples in input order."""
    import pandas as pd

    group = group.sort_values("position", kind="stable")
    return pd.DataFrame(
        {"shard": [int(group["shard"].iloc[0])], "samples": [json.dumps(list(group["sample"]))]}
    )


def method_recipes(
    methods: MethodSpec, interpreters: Mapping[str, BaseInterpreter]
) -> dict[str, MethodRecipe]:
    """``{name: (class path, options)}`` to rebuild each of ``interpreters`` on a worker.

    Methods given by name or ``{name: options}`` travel with those options; an interpreter
    instance with its :meth:`~ehrlens.interpret.BaseInterpreter.get_params`.

    Raises:
        TypeError: a class cannot be imported by name (e.g. defined in ``__main__`` or inside
            a function), naming the method.

    Example:
        >>> method_recipes({"r": {"head_fusion": "max"}}, {"r": AttentionRollout(model, "max")})
        {'r': ('ehrlens.interpret.methods.rollout:AttentionRollout', {'head_fusion': 'max'})}
    """
    specs = methods if isinstance(methods, Mapping) else {}
    recipes = {}
    for name, interpreter in interpreters.items():
        spec = specs.get(name, {})
        options = spec.get_params() if isinstance(spec, BaseInterpreter) else dict(spec)
        try:
            path = class_path(type(interpreter))
        except TypeError as error:
            raise TypeError(
                f"method {name!r}: the Ray engine rebuilds each method on every worker as "
                f"type(i)(model, **i.get_params()), so its class must be importable there: "
                f"{error}"
            ) from error
        recipes[name] = (path, options)
    return recipes


def rebuild_methods(model: Any, recipes: Mapping[str, MethodRecipe]) -> dict[str, BaseInterpreter]:
    """``{name: interpreter}`` on ``model`` from :func:`method_recipes` (on a worker).

    Raises:
        ImportError: a method's class cannot be imported in this process, naming the method
            and the class.
    """
    built = {}
    for name, (path, options) in recipes.items():
        try:
            cls = load_class(path)
        except ImportError as error:
            raise ImportError(
                f"method {name!r}: {error}; the Ray engine imports each method's class on "
                "every worker, so its module must be importable there (installed, or on the "
                "workers' PYTHONPATH)"
            ) from error
        built[name] = cls(model, **options)
    return built


def _gpus_per_worker(ray: Any, requested: float | None) -> float:
    if requested is not None:
        return float(requested)
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _default_workers(ray: Any, gpus: float) -> int:
    resources = ray.cluster_resources()
    if gpus > 0:
        return max(1, int(resources.get("GPU", 1) // gpus))
    return max(1, int(resources.get("CPU", 1)))


#: The identity columns of MEDS rows (every shard writes them, even an empty one).
MEDS_IDENTITY = ("subject_id", "prediction_time", "event_time")


class MedsShardExplainer(ShardExplainer):
    """Ray Data callable class for MEDS: each call gets one data shard's index, reads that
    shard and the labels of its subjects on the worker, builds the shard's samples with the
    model's feature mapping, explains them and writes ``part-<shard>.parquet``."""

    def __init__(
        self,
        root: str,
        labels: str,
        options: Mapping[str, Any],
        keep: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.labels = labels
        self.options = dict(options)
        self.keep = None if keep is None else set(keep)

    def __call__(self, batch: Any) -> Any:
        import warnings

        import pandas as pd

        from ..data import create_sample_dataset
        from ..data.meds import MedsOptions, MedsWarning, from_meds
        from .table import _empty_columns

        if len(batch) != 1:
            raise RuntimeError(f"expected one shard per call, got {len(batch)}")
        index = int(batch["shard"].iloc[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MedsWarning)  # the driver's own read counts them
            data = from_meds(
                self.root, self.labels, options=MedsOptions.from_dict(self.options),
                label_key=self.model.schema.label_keys[0], shards=[index],
            )  # fmt: skip
        samples = data.samples
        if self.keep is not None:
            samples = [s for s in samples if s["patient_id"] in self.keep]
        if samples:
            dataset = create_sample_dataset(samples, schema=self.model.schema)
            columns = explain_rows(
                self.model, dataset, self.interpreters, range(len(dataset)), self.batch_size,
                self.target, self.model_id, self.model.schema, identity=MEDS_IDENTITY,
            )  # fmt: skip
        else:
            columns = _empty_columns(MEDS_IDENTITY)
        path = self.out_dir / SHARD_PATTERN.format(index)
        metadata = shard_metadata(self.fingerprint, index, columns, [])
        metadata["ehrlens.patients"] = str(batch["patients"].iloc[0])
        write_shard(path, columns, metadata)
        return pd.DataFrame({"shard": [index], "rows": [len(columns["patient_id"])]})


def meds_shard_samples(
    root: str | os.PathLike, labels: str | os.PathLike, keep: Sequence[str] | None = None
) -> list[list[str]]:
    """The sample ids each data shard is expected to hold (from the labels, sorted), read on
    the driver from the shards' ``subject_id`` columns only.

    Raises:
        ValueError: a subject in two shards, or labels for subjects in no shard.
    """
    import pyarrow.parquet as pq

    from ..data.meds import data_shards, read_labels, sample_id

    shards = data_shards(root)
    owner: dict[int, int] = {}
    for number, path in enumerate(shards):
        try:
            subjects = pq.read_table(path, columns=["subject_id"]).column(0).to_pylist()
        except Exception as error:
            raise ValueError(f"{path}: cannot read its subject_id column ({error})") from error
        for subject in set(subjects):
            if subject in owner:
                raise ValueError(
                    f"subject {subject} is in two data shards, {shards[owner[subject]]} and "
                    f"{path} (MEDS keeps each subject in one shard)"
                )
            owner[subject] = number
    frame, _ = read_labels(labels)
    unknown = sorted(set(frame["subject_id"].tolist()) - set(owner))
    if unknown:
        raise ValueError(
            f"{labels}: {len(unknown)} labelled subject(s) are in no data shard of {root}, "
            f"e.g. {unknown[:5]}"
        )
    wanted = None if keep is None else set(keep)
    expected: list[list[str]] = [[] for _ in shards]
    for subject, when in zip(frame["subject_id"], frame["prediction_time"], strict=True):
        pid = sample_id(subject, when.to_pydatetime())
        if wanted is None or pid in wanted:
            expected[owner[subject]].append(pid)
    return [sorted(ids) for ids in expected]


def explain_meds_ray(
    model_dir: str | os.PathLike,
    root: str | os.PathLike,
    labels: str | os.PathLike,
    methods: MethodSpec = ("rollout",),
    *,
    out_dir: str | os.PathLike,
    batch_size: int = 64,
    target_class_idx: int | None = None,
    address: str | None = None,
    num_workers: int | None = None,
    num_gpus_per_worker: float | None = None,
    progress: bool = False,
    model_sha256: str | None = None,
    patient_ids: Sequence[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> ExplainResult:
    """Explain a MEDS dataset with Ray Data, one output shard per data shard.

    The driver reads only the shards' ``subject_id`` columns and the labels (to check that
    each subject is in one shard and to know each shard's samples). Each data shard then goes
    to an actor, which reads it, builds its samples with the feature mapping recorded in the
    model's card (:class:`~ehrlens.data.meds.MedsOptions`, the same as the single-process
    :func:`~ehrlens.data.meds.from_meds`), explains them and writes ``part-<shard>.parquet``.
    MEDS keeps each subject in one shard, sorted by time, so no global ordering is needed:
    the shards in order hold the rows of the single-process run in the same order. A re-run
    verifies each shard file (run fingerprint, index, expected samples, content digest) and
    recomputes only those that do not verify.

    Args:
        model_dir: a model directory trained on MEDS data (its card has ``"meds"``).
        root / labels: the MEDS folder and its task labels (file or folder).
        methods, batch_size, target_class_idx, address, num_workers, num_gpus_per_worker,
        progress, model_sha256, overwrite, quiet: as in :func:`explain_cohort_ray`.
        patient_ids: explain only these samples (e.g. the test split); default all.

    Returns:
        :class:`~ehrlens.explain.ExplainResult` over the shard files.

    Example:
        >>> result = explain_meds_ray("model/", "meds/", "labels.parquet", ["rollout"],
        ...                           out_dir="attr/", num_workers=2)
        >>> result.to_frame()[["subject_id", "prediction_time", "code", "score"]]
    """
    ray = _ray()
    from ..data.meds import MedsOptions, meds_digest
    from ..models.directory import load_model_dir

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, card = load_model_dir(model_dir, expected_sha256=model_sha256)
    entry = card.get("meds")
    if not isinstance(entry, Mapping) or "options" not in entry:
        raise ValueError(f"{model_dir}: the model was not trained on MEDS data (no 'meds' card)")
    options = MedsOptions.from_dict(entry["options"]).to_dict()
    interpreters = build_methods(model, methods)
    recipes = method_recipes(methods, interpreters)
    expected = meds_shard_samples(root, labels, patient_ids)
    model_id = card.get("model_id") or ""
    selection = None
    if patient_ids is not None:
        selection = hashlib.sha256("\n".join(sorted(patient_ids)).encode()).hexdigest()[:16]
    settings = run_settings(
        model_id, meds_digest(root, labels)[:16], interpreters, batch_size, 0,
        target_class_idx, engine="ray-meds", meds=options, selection=selection,
    )  # fmt: skip
    fingerprint = run_fingerprint(settings)
    out = Path(out_dir)
    init_ray(address, num_cpus=None if address is not None else num_workers, quiet=quiet)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = bool(progress)
    context.raise_original_map_exception = True
    with claimed_output(out, fingerprint, settings, len(expected), overwrite):
        result = ExplainResult(fingerprint=fingerprint)
        todo: list[dict[str, Any]] = []
        for index, ids in enumerate(expected):
            path = out / SHARD_PATTERN.format(index)
            result.shards.append(path)
            done = verified_shard_rows(path, fingerprint, index, patient_hash(ids))
            if done is None:
                todo.append({"shard": index, "patients": patient_hash(ids)})
            else:
                result.reused.append(index)
                result.num_rows += done
        if todo:
            gpus = _gpus_per_worker(ray, num_gpus_per_worker)
            workers = max(1, min(num_workers or _default_workers(ray, gpus), len(todo)))
            summary = _run_unwrapped(
                lambda: (
                    ray.data.from_items(todo)
                    .map_batches(
                        MedsShardExplainer,
                        batch_size=1,
                        batch_format="pandas",
                        concurrency=workers,
                        num_cpus=1,
                        num_gpus=gpus,
                        fn_constructor_kwargs={
                            "root": str(root),
                            "labels": str(labels),
                            "options": options,
                            "keep": None if patient_ids is None else list(patient_ids),
                            "model_dir": str(model_dir),
                            "methods": recipes,
                            "out_dir": str(out),
                            "fingerprint": fingerprint,
                            "batch_size": batch_size,
                            "target_class_idx": target_class_idx,
                            "model_id": model_id,
                            "model_sha256": model_sha256,
                        },
                    )
                    .to_pandas()
                )
            )
            written = dict(zip(summary["shard"].tolist(), summary["rows"].tolist(), strict=True))
            missing = {int(t["shard"]) for t in todo} - set(written)
            if missing:
                raise RuntimeError(f"shards {sorted(missing)} produced no output")
            result.computed.extend(sorted(written))
            result.num_rows += int(sum(written.values()))
        finish_manifest(out, fingerprint, result.num_rows)
    return result

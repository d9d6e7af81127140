"""The declared spec of one explain run, :class:`ExplainRun`, and how its methods travel.

A run says everything that decides its rows: the model (a directory, with the checksum to
trust), the sample source, the methods with their options, the size limits, the device,
batching and bucketing, the class to explain, and the output folder with its overwrite rule.
Both executors (:class:`~ehrlens.explain.local_engine.LocalExecutor`,
:class:`~ehrlens.explain.ray_engine.RayExecutor`) take the same run, and its fingerprint
(:meth:`ExplainRun.settings`) is the output folder's identity for resuming: a folder written
by one executor is resumed by the other.

Example:
    >>> from ehrlens.data.sources import JsonlSource
    >>> run = ExplainRun(JsonlSource("patients.jsonl"), ["rollout", "flow"], model_dir="model/",
    ...                  out_dir="explained/", limits=SizeLimits(max_steps=None))
    >>> result = LocalExecutor().run(run)          # or RayExecutor(num_workers=8).run(run)
    >>> result.num_patients, result.computed
    (130, [0])
    >>> LocalExecutor().run(run).reused            # the folder resumes: nothing to compute
    [0]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.sources import SampleSource, SizeLimits
from ..interpret.methods import BaseInterpreter
from ..interpret.registry import METHODS, class_path, load_class, make_interpreter
from .shards import run_settings

#: Methods as a run takes them: names, ``{name: constructor options}`` or
#: ``{name: interpreter}``.
MethodSpec = Sequence[str] | Mapping[str, Mapping[str, Any] | BaseInterpreter]
#: How a method travels to another process: ``(class path "module:qualname", options)``.
MethodRecipe = tuple[str, dict[str, Any]]


def normalise_methods(methods: MethodSpec) -> dict[str, Mapping[str, Any] | BaseInterpreter]:
    """``{name: options or interpreter}`` from any :data:`MethodSpec`.

    Raises:
        ValueError: no method, or a name that is not registered (for names and options).

    Example:
        >>> normalise_methods(["rollout"])
        {'rollout': {}}
    """
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        out: dict[str, Mapping[str, Any] | BaseInterpreter] = {}
        for name, spec in methods.items():
            out[str(name)] = spec if isinstance(spec, BaseInterpreter) else dict(spec)
    else:
        out = {str(name): {} for name in methods}
    if not out:
        raise ValueError("methods is empty: name at least one, e.g. ['rollout']")
    for name, spec in out.items():
        if not isinstance(spec, BaseInterpreter) and name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return out


def build_methods(model: Any, methods: MethodSpec) -> dict[str, BaseInterpreter]:
    """``{name: interpreter}`` on ``model`` from a :data:`MethodSpec` (instances as given).

    Example:
        >>> build_methods(model, {"rollout": {"head_fusion": "max"}})["rollout"].head_fusion
        'max'
    """
    return {
        name: spec if isinstance(spec, BaseInterpreter) else make_interpreter(name, model, **spec)
        for name, spec in normalise_methods(methods).items()
    }


def method_recipes(methods: MethodSpec) -> dict[str, MethodRecipe]:
    """``{name: (class path, options)}`` to rebuild each method in another process: a name
    with its options, an instance with its
    :meth:`~ehrlens.interpret.BaseInterpreter.get_params`.

    Raises:
        TypeError: a class cannot be imported by name (e.g. defined in ``__main__`` or inside
            a function), naming the method.

    Example:
        >>> method_recipes({"r": AttentionRollout(model, "max")})
        {'r': ('ehrlens.interpret.methods.rollout:AttentionRollout', {'head_fusion': 'max', ...})}
    """
    recipes = {}
    for name, spec in normalise_methods(methods).items():
        if isinstance(spec, BaseInterpreter):
            cls, options = type(spec), spec.get_params()
        else:
            cls, options = METHODS[name].cls, dict(spec)
        try:
            path = class_path(cls)
        except TypeError as error:
            raise TypeError(
                f"method {name!r}: another process rebuilds each method as "
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

    Example:
        >>> rebuilt = rebuild_methods(model, method_recipes({"rollout": {"head_fusion": "max"}}))
        >>> type(rebuilt["rollout"]).__name__, rebuilt["rollout"].head_fusion
        ('AttentionRollout', 'max')
    """
    built = {}
    for name, (path, options) in recipes.items():
        try:
            cls = load_class(path)
        except ImportError as error:
            raise ImportError(
                f"method {name!r}: {error}; each worker imports each method's class, so its "
                "module must be importable there (installed, or on the workers' PYTHONPATH)"
            ) from error
        built[name] = cls(model, **options)
    return built


@dataclass
class ExplainRun:
    """One explain run, declared: the same spec for this process and for Ray.

    Args:
        source: where the patients come from (:class:`~ehrlens.data.sources.SampleSource`).
        methods: names, ``{name: options}`` or ``{name: interpreter}``.
        model_dir: the model directory (needed by Ray workers; the local executor may be
            given a model object instead).
        model_sha256: SHA-256 of ``model.pt`` to verify wherever the model is loaded.
        out_dir: folder of Parquet shards; ``None`` keeps the table in memory (local only).
        overwrite: replace a previous run's manifest and shards in ``out_dir``.
        batch_size: patients per forward pass.
        shard_size: patients per output shard where the source can cut freely (one shard per
            data shard for MEDS).
        bucket_by_length: batch patients of similar size together within each shard.
        target_class_idx: class to explain; ``None``: the methods' default.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``: the model's own device
            locally, the GPU on Ray when the cluster has GPUs.
        limits: size limits every unit's dataset is built with.
        model_id: the ``model_id`` column; default the card's (or the model's fingerprint).

    Example:
        >>> from ehrlens.data.sources import SamplesSource
        >>> run = ExplainRun(SamplesSource(samples), {"rollout": {"head_fusion": "max"}},
        ...                  model_dir="model/", batch_size=32, device="cpu")
        >>> run.method_recipes()["rollout"][1]
        {'head_fusion': 'max'}
    """

    source: SampleSource
    methods: MethodSpec = ("rollout",)
    model_dir: str | os.PathLike | None = None
    model_sha256: str | None = None
    out_dir: str | os.PathLike | None = None
    overwrite: bool = False
    batch_size: int = 64
    shard_size: int = 1000
    bucket_by_length: bool = False
    target_class_idx: int | None = None
    device: str | None = None
    limits: SizeLimits = field(default_factory=SizeLimits)
    model_id: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1:
            raise ValueError(
                f"batch_size and shard_size must be >= 1, got {self.batch_size}, {self.shard_size}"
            )
        self.methods = normalise_methods(self.methods)

    def method_recipes(self) -> dict[str, MethodRecipe]:
        """The methods as they travel to workers (:func:`method_recipes`)."""
        return method_recipes(self.methods)

    def settings(
        self, model_id: str, interpreters: Mapping[str, BaseInterpreter], device: str
    ) -> dict[str, Any]:
        """Everything that decides the rows, as plain data: hashed into the run's fingerprint
        (:func:`~ehrlens.explain.shards.run_fingerprint`) and kept in its manifest. The
        executor is not part of it: local and Ray write the same folder.

        Example:
            >>> from ehrlens.data.sources import SamplesSource
            >>> run = ExplainRun(SamplesSource(samples), ["rollout"], model_dir="model/")
            >>> interpreters = build_methods(model, run.methods)
            >>> run.settings("m1", interpreters, "cpu")["limits"]
            {'max_codes_per_step': 1000, 'max_steps': 10000}
            >>> on_gpu = [run.settings("m1", interpreters, d) for d in ("cuda:0", "cuda:1")]
            >>> on_gpu[0] == on_gpu[1]      # a device's index does not change the rows
            True
        """
        extra: dict[str, Any] = {"bucket_by_length": True} if self.bucket_by_length else {}
        return run_settings(
            model_id, self.source.digest(), interpreters, self.batch_size, self.shard_size,
            self.target_class_idx, limits=dict(sorted(self.limits.as_kwargs().items())),
            device=device_type(device), **extra,
        )  # fmt: skip


def device_type(device: Any) -> str:
    """``"cpu"`` or ``"cuda"`` of a device (its index does not change the rows).

    Example:
        >>> device_type("cuda:1")
        'cuda'
    """
    return str(device).split(":", 1)[0]


__all__ = [
    "ExplainRun",
    "MethodRecipe",
    "MethodSpec",
    "build_methods",
    "device_type",
    "method_recipes",
    "normalise_methods",
    "rebuild_methods",
]

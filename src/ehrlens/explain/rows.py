"""Explain batches of patients with several methods into long-format columns.

The one code path both engines run: the single-process :func:`~ehrlens.explain.explain_cohort`
and each Ray worker of :func:`~ehrlens.explain.ray_engine.explain_cohort_ray`.

Example:
    >>> interpreters = build_methods(model, ["rollout", "chefer"])
    >>> columns = explain_rows(model, dataset, interpreters, range(8), 8, None, "m1", model.schema)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.modes import eval_mode
from ..data.dataset import SampleDataset, move_to_device
from ..interpret.methods import BaseInterpreter
from ..interpret.registry import make_interpreter
from .table import concat_columns, method_columns

MethodSpec = Sequence[str] | Mapping[str, Mapping[str, Any] | BaseInterpreter]


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
    in patient order, then method. ``bar_iter`` is advanced once per batch.

    Each interpreter whose class declares ``gradient_free`` runs under
    ``torch.inference_mode()``, whether it was given by name or as an instance."""
    indices = list(indices)
    blocks = []
    with eval_mode(model):
        for offset in range(0, len(indices), batch_size):
            chunk = indices[offset : offset + batch_size]
            batch = dataset.collate([dataset[i] for i in chunk])
            batch = move_to_device(batch, getattr(model, "device", "cpu"))
            per_method = {}
            for name, interpreter in interpreters.items():
                if type(interpreter).gradient_free:
                    with torch.inference_mode():
                        per_method[name] = interpreter.attribute(target, **batch)
                else:
                    per_method[name] = interpreter.attribute(target, **batch)
            blocks.append(method_columns(per_method, batch, schema, model_id))
            if bar_iter is not None:
                next(bar_iter, None)
    return concat_columns(blocks)

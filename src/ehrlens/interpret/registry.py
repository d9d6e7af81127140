"""Interpreters by name, for the command line and cohort runs, generated from the classes.

Each method class declares its ``name``, ``gradient_free``, ``needs`` and ``summary``
(:class:`~ehrlens.interpret.BaseInterpreter`); :func:`register_method` adds it here, and
:data:`METHODS`, :func:`make_interpreter`, the command line's method list and help, and both
explain engines read this one table.

Example:
    >>> interpreter = make_interpreter("rollout", model, head_fusion="max")
    >>> METHODS["chefer"].gradient_free
    False
    >>> @register_method
    ... class Uniform(BaseInterpreter):
    ...     name, gradient_free, needs, summary = "uniform", True, (), "1 everywhere"
    ...     def attribute(self, target_class_idx=None, **batch): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .methods import AttentionRollout, BaseInterpreter  # noqa: F401 (AttentionRollout: examples)
from .methods.base import (
    METHOD_REGISTRY,
    constructor_params,
    register_method,
    unregister_method,
)

__all__ = [
    "BUILTIN_METHODS",
    "METHODS",
    "MethodInfo",
    "class_path",
    "load_class",
    "make_interpreter",
    "method_help",
    "register_method",
    "unregister_method",
]


@dataclass(frozen=True)
class MethodInfo:
    """One named method; everything but the class is read from the class itself."""

    cls: type[BaseInterpreter]

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def gradient_free(self) -> bool:
        return self.cls.gradient_free

    @property
    def needs(self) -> tuple[type | str, ...]:
        return self.cls.needs

    @property
    def summary(self) -> str:
        return self.cls.summary

    @property
    def params(self) -> list[str]:
        """The constructor's options (arguments after ``model``)."""
        return constructor_params(self.cls)


class _MethodTable(Mapping[str, MethodInfo]):
    """``{name: MethodInfo}``: a read-only view of :data:`METHOD_REGISTRY`."""

    def __getitem__(self, name: str) -> MethodInfo:
        return MethodInfo(METHOD_REGISTRY[name])

    def __contains__(self, name: object) -> bool:
        return name in METHOD_REGISTRY

    def __iter__(self) -> Iterator[str]:
        return iter(METHOD_REGISTRY)

    def __len__(self) -> int:
        return len(METHOD_REGISTRY)


#: ``{name: MethodInfo}`` of every registered method, in registration order (read-only; change
#: it with :func:`register_method` and :func:`unregister_method`).
METHODS: Mapping[str, MethodInfo] = _MethodTable()


def make_interpreter(name: str, model: Any, **options: Any) -> BaseInterpreter:
    """Build the interpreter called ``name`` on ``model`` with constructor ``options``.

    Raises:
        ValueError: ``name`` is not one of :data:`METHODS`.
        TypeError: the model lacks the interface the method needs, or an option is unknown.

    Example:
        >>> flow = make_interpreter("flow", model, max_seq_len=512)
    """
    return METHOD_REGISTRY[name](model, **options)


def method_help() -> list[tuple[str, str]]:
    """``[(name, summary), ...]`` of every registered method, for listings and help text."""
    return [(name, info.summary) for name, info in METHODS.items()]


def class_path(cls: type) -> str:
    """``"module:qualname"`` by which another process imports ``cls``.

    Raises:
        TypeError: ``cls`` cannot be imported by name (defined in ``__main__``, inside a
            function, or not reachable under its module's name).

    Example:
        >>> class_path(AttentionRollout)
        'ehrlens.interpret.methods.rollout:AttentionRollout'
    """
    path = f"{cls.__module__}:{cls.__qualname__}"
    why = None
    if cls.__module__ == "__main__":
        why = "it is defined in the __main__ script"
    elif "<locals>" in cls.__qualname__:
        why = "it is defined inside a function"
    else:
        try:
            found = load_class(path)
        except ImportError as error:
            why = str(error)
        else:
            if found is not cls:
                why = f"{path} names another object"
    if why is not None:
        raise TypeError(
            f"{cls.__qualname__} cannot be imported by name ({why}); define it at the top "
            "level of an importable module"
        )
    return path


def load_class(path: str) -> type:
    """The class named by ``"module:qualname"`` (see :func:`class_path`).

    Raises:
        ImportError: the module cannot be imported or has no such class; the message names
            the path.
    """
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ImportError(f"cannot import {path}: {error}") from error
    return target


#: The built-in methods, in the order they are listed (each registers at its definition).
BUILTIN_METHODS: tuple[type[BaseInterpreter], ...] = tuple(METHOD_REGISTRY.values())

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
from dataclasses import dataclass
from typing import Any

from .methods import (
    AttentionFlow,
    AttentionRollout,
    AttnLRP,
    BaseInterpreter,
    CheferRelevance,
    InputXGradient,
    IntegratedGradients,
    RandomBaseline,
    RawAttention,
    VisitScoreSplit,
)
from .methods.base import check_declaration, constructor_params, is_abstract


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


#: ``{name: MethodInfo}`` of every registered method, in registration order.
METHODS: dict[str, MethodInfo] = {}


def register_method(cls: type[BaseInterpreter]) -> type[BaseInterpreter]:
    """Make ``cls`` available by its ``name``; usable as a class decorator.

    Registering the same class again does nothing.

    Raises:
        TypeError: ``cls`` is not a concrete :class:`BaseInterpreter` subclass with its own
            ``name`` and a valid declaration.
        ValueError: another class is registered under the same name.

    Example:
        >>> @register_method
        ... class Toy(BaseInterpreter):
        ...     name, gradient_free, needs, summary = "toy", True, (), "a toy"
        ...     def attribute(self, target_class_idx=None, **batch): ...
        >>> make_interpreter("toy", model)
        <...Toy object at ...>
        >>> _ = unregister_method("toy")
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseInterpreter)):
        raise TypeError(f"register_method takes a BaseInterpreter subclass, got {cls!r}")
    if is_abstract(cls):
        raise TypeError(f"{cls.__qualname__} is abstract (it does not implement attribute)")
    check_declaration(cls)
    if "name" not in vars(cls):
        raise TypeError(
            f"{cls.__qualname__} inherits name {cls.name!r} from a parent class; declare its "
            "own name to register it"
        )
    known = METHODS.get(cls.name)
    if known is not None and known.cls is not cls:
        raise ValueError(
            f"method name {cls.name!r} is already registered to "
            f"{known.cls.__module__}.{known.cls.__qualname__}; choose another name for "
            f"{cls.__module__}.{cls.__qualname__}, or unregister_method({cls.name!r}) first"
        )
    METHODS[cls.name] = MethodInfo(cls)
    return cls


def unregister_method(name: str) -> type[BaseInterpreter]:
    """Remove the method called ``name``; returns its class.

    Raises:
        ValueError: no method has that name.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS.pop(name).cls


def make_interpreter(name: str, model: Any, **options: Any) -> BaseInterpreter:
    """Build the interpreter called ``name`` on ``model`` with constructor ``options``.

    Raises:
        ValueError: ``name`` is not one of :data:`METHODS`.
        TypeError: the model lacks the interface the method needs, or an option is unknown.

    Example:
        >>> flow = make_interpreter("flow", model, max_seq_len=512)
    """
    info = METHODS.get(name)
    if info is None:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return info.cls(model, **options)


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


#: The built-in methods, in the order they are listed.
BUILTIN_METHODS: tuple[type[BaseInterpreter], ...] = (
    AttentionRollout,
    AttentionFlow,
    CheferRelevance,
    AttnLRP,
    RawAttention,
    InputXGradient,
    IntegratedGradients,
    RandomBaseline,
    VisitScoreSplit,
)
for _cls in BUILTIN_METHODS:
    register_method(_cls)
del _cls

"""Schema string -> processor class: the one registry of input and label types.

Adding an input type is writing one :class:`~ehrlens.data.processors.FeatureProcessor`
subclass with a ``schema`` string and registering it; every part of the library (datasets,
models, interpreters, metrics, the attribution table, event tables, saved models) then finds
it by that string.

Example:
    >>> from ehrlens.data.processors import SequenceProcessor
    >>> @register_processor
    ... class CodeListProcessor(SequenceProcessor):   # a FeatureProcessor subclass
    ...     schema = "code_list"
    >>> make_feature_processor("code_list", key="diagnoses")
    <...CodeListProcessor object at ...>
    >>> unregister_processor("code_list")
    <class '...CodeListProcessor'>
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from ...core.registry import Registry
from .base import FeatureProcessor, LabelProcessor, Processor, check_max_length


def _schema(cls: type[Processor]) -> str:
    schema = getattr(cls, "schema", None)
    if not isinstance(schema, str) or not schema:
        raise TypeError(f"{cls.__name__} needs a class attribute schema = '<name>' to register")
    return schema


def _check_processor(cls: type[Processor]) -> None:
    schema = _schema(cls)
    if inspect.isabstract(cls):
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        raise TypeError(f"{cls.__name__} (schema '{schema}') does not implement {missing}")


#: Input schema string -> processor class (filled by :func:`register_processor`).
FEATURE_PROCESSORS: Registry[type[FeatureProcessor]] = Registry(
    "input schema", key=_schema, check=_check_processor
)
#: Output schema string -> processor class.
LABEL_PROCESSORS: Registry[type[LabelProcessor]] = Registry(
    "output schema", key=_schema, check=_check_processor
)

P = TypeVar("P", bound=type[Processor])


def register_processor(cls: P) -> P:
    """Register a processor class under its ``schema`` string; usable as a decorator.

    Input processors go to :data:`FEATURE_PROCESSORS`, label processors to
    :data:`LABEL_PROCESSORS`. Registering the same class again does nothing.

    Raises:
        TypeError: ``cls`` is not a processor class, has no ``schema`` string, or leaves
            abstract methods unimplemented (they are named).
        ValueError: another class is registered under the same schema string.

    Example:
        >>> from ehrlens.data.processors import SequenceProcessor
        >>> class CodeListProcessor(SequenceProcessor):
        ...     schema = "code_list"
        >>> register_processor(CodeListProcessor)
        <class '...CodeListProcessor'>
        >>> samples = [{"patient_id": "p1", "diagnoses": ["I10"], "y": 1}]
        >>> dataset = create_sample_dataset(samples, {"diagnoses": "code_list"}, {"y": "binary"})
        >>> type(dataset.input_processors["diagnoses"]).__name__
        'CodeListProcessor'
        >>> _ = unregister_processor("code_list")
    """
    if isinstance(cls, type) and issubclass(cls, FeatureProcessor):
        FEATURE_PROCESSORS.register(cls)
    elif isinstance(cls, type) and issubclass(cls, LabelProcessor):
        LABEL_PROCESSORS.register(cls)
    else:
        raise TypeError(
            f"register_processor expects a FeatureProcessor or LabelProcessor subclass, got {cls!r}"
        )
    return cls


def unregister_processor(schema: str) -> type[Processor]:
    """Remove a schema string from the registry and return its class.

    Raises:
        ValueError: no processor has that schema string.
    """
    registry: Registry[Any]
    for registry in (FEATURE_PROCESSORS, LABEL_PROCESSORS):
        if schema in registry:
            return registry.unregister(schema)
    raise ValueError(f"schema {schema!r} is not registered")


def feature_processor_class(schema: str, key: str) -> type[FeatureProcessor]:
    """The class registered for an input schema string; unknown strings raise ValueError."""
    if not isinstance(schema, str) or schema not in FEATURE_PROCESSORS:
        raise ValueError(
            f"feature '{key}': unknown input schema {schema!r}; "
            f"expected one of {sorted(FEATURE_PROCESSORS)}"
        )
    return FEATURE_PROCESSORS[schema]


def make_feature_processor(
    schema: str, key: str, max_length: int | None = None
) -> FeatureProcessor:
    """Return a new processor for an input schema string; unknown strings raise ValueError.

    ``max_length`` (time-ordered schemas only, e.g. ``"sequence"``, ``"nested_sequence"``,
    ``"stagenet"``, ``"timeseries"``) keeps the last ``max_length`` steps of longer samples.
    """
    cls = feature_processor_class(schema, key)
    if max_length is None:
        return cls()
    if not cls.supports_max_length:
        raise ValueError(
            f"feature '{key}': max_length does not apply to schema {schema!r} "
            "(only to time-ordered features)"
        )
    return cls(max_length=check_max_length(max_length, key))  # type: ignore[call-arg]


def make_label_processor(schema: str, key: str) -> LabelProcessor:
    """Return a new processor for an output schema string; unknown strings raise ValueError."""
    if not isinstance(schema, str) or schema not in LABEL_PROCESSORS:
        raise ValueError(
            f"label '{key}': unknown output schema {schema!r}; "
            f"expected one of {sorted(LABEL_PROCESSORS)}"
        )
    return LABEL_PROCESSORS[schema]()

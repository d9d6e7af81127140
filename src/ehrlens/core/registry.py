"""One registry mechanism: objects by name, for methods, processors and models alike.

A :class:`Registry` maps names to objects (here: classes) in registration order. Each kind
of thing states how a name is read from an object (``key``) and what an object must satisfy
to be registered (``check``); ``register`` works as a decorator and as a call.

Example:
    >>> shapes = Registry("shape", key=lambda cls: cls.name)
    >>> @shapes.register
    ... class Square:
    ...     name = "square"
    >>> shapes["square"] is Square, list(shapes)
    (True, ['square'])
    >>> shapes["circle"]
    Traceback (most recent call last):
    ...
    ehrlens.core.registry.UnknownNameError: unknown shape 'circle'; choose from square
    >>> shapes.unregister("square") is Square, len(shapes)
    (True, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered; both a ``KeyError`` and a ``ValueError``.

    The message lists the registered names.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _describe(obj: object) -> str:
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return repr(obj)


class Registry(Mapping[str, T], Generic[T]):
    """Named objects of one kind, in registration order; a read-only mapping.

    Args:
        kind: what is registered, in messages (``"method"``, ``"model"``).
        key: reads the name of an object (default: its ``name`` attribute).
        check: called with each object before it is registered; raises (``TypeError``) on
            an object that does not qualify.

    Registering the same object again does nothing; another object under a taken name is a
    ``ValueError`` naming both. Unknown names raise :class:`UnknownNameError`.
    """

    def __init__(
        self,
        kind: str,
        *,
        key: Callable[[T], str] | None = None,
        check: Callable[[T], None] | None = None,
    ) -> None:
        self.kind = kind
        self._key = key if key is not None else _name_attribute
        self._check = check
        self._entries: dict[str, T] = {}

    def name_of(self, obj: T) -> str:
        """The name ``obj`` is (or would be) registered under."""
        return self._key(obj)

    def register(self, obj: T, *, replace: bool = False) -> T:
        """Add ``obj`` under its name and return it, so ``@registry.register`` decorates.

        Args:
            replace: let ``obj`` take the place of another object of the same name.

        Raises:
            TypeError: ``check`` refuses ``obj``, or its name is not a non-empty string.
            ValueError: another object is registered under the same name.
        """
        if self._check is not None:
            self._check(obj)
        name = self._key(obj)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} {_describe(obj)} has no name (got {name!r})")
        known = self._entries.get(name)
        if known is not None and known is not obj and not replace:
            raise ValueError(
                f"{self.kind} {name!r} is already registered to {_describe(known)}; "
                f"choose another name for {_describe(obj)}, or unregister {name!r} first"
            )
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object.

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        self._known(name)
        return self._entries.pop(name)

    def __getitem__(self, name: str) -> T:
        self._known(name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries) or 'empty'})"

    def unknown(self, name: object) -> UnknownNameError:
        """The error for an unregistered ``name``: it lists the registered names."""
        known = ", ".join(self._entries) or f"no {self.kind} is registered"
        return UnknownNameError(f"unknown {self.kind} {name!r}; choose from {known}")

    def snapshot(self) -> dict[str, T]:
        """A copy of the entries, for :meth:`restore` (tests that register scratch objects)."""
        return dict(self._entries)

    def restore(self, snapshot: Mapping[str, T]) -> None:
        """Make the entries those of ``snapshot``, in its order."""
        self._entries = dict(snapshot)

    def _known(self, name: object) -> None:
        if not isinstance(name, str) or name not in self._entries:
            raise self.unknown(name)


def _name_attribute(obj: object) -> str:
    name = getattr(obj, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"{_describe(obj)} has no string attribute 'name'")
    return name

"""``--method``: method names and their options, as the command line takes them.

``-m rollout:head_fusion=max,flow:max_seq_len=512`` is rollout with ``head_fusion="max"`` and
flow with ``max_seq_len=512``. A value is read as the type of the option's default (``int``,
``float``, ``bool``: true/false/yes/no/1/0, ``str``: the text, or a boolean for the words
above); an option whose default is ``None`` takes ``none``, an integer, a number or text.
Further options of the same method follow after a
comma or a colon: ``-m rollout:head_fusion=max,discard_ratio=0.1``. Method names and option
names are case-insensitive. Unknown names, and values of the wrong type, are refused with a
message that names the method and the option; values the method itself refuses are reported
the same way once the model is loaded (:func:`check_method_options`).

The registry (``ehrlens.interpret.registry``) is imported only when a value is checked or the
help of ``--method`` is shown, never when the command is built.

Example:
    >>> parse_methods(("Rollout:head_fusion=max,flow:max_seq_len=512",))
    {'rollout': {'head_fusion': 'max'}, 'flow': {'max_seq_len': 512}}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import click

DEFAULT_METHOD = "rollout"
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def method_defaults(name: str) -> dict[str, Any]:
    """``{option: default}`` of the registered method ``name`` (its constructor arguments
    after ``model``, as :meth:`~ehrlens.interpret.BaseInterpreter.get_params` reads them back;
    ``inspect.Parameter.empty`` for one without a default)."""
    from ..interpret.registry import METHODS

    info = METHODS[name]
    signature = inspect.signature(info.cls.__init__).parameters
    return {param: signature[param].default for param in info.params}


def method_help_text() -> str:
    """Help of ``--method``: every registered method with its summary and options (with their
    defaults), read from the registry when the help is shown (so methods registered after
    import are listed too)."""
    from ..interpret.registry import method_help

    listed = method_help()
    width = max((len(name) for name, _ in listed), default=0)
    lines = []
    for name, summary in listed:
        lines.append(f"{name:{width}s}  {summary}")
        defaults = method_defaults(name)
        if defaults:
            shown = ", ".join(f"{key}={_show(value)}" for key, value in defaults.items())
            lines.append(f"{'':{width}s}    options: {shown}")
    return (
        f"Method(s), repeated or comma-separated, each with options as "
        f"NAME:OPTION=VALUE [default: {DEFAULT_METHOD}]:\n\n\b\n"
        "e.g. -m rollout:head_fusion=max,flow:max_seq_len=512\n" + "\n".join(lines)
    )


def _show(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "(required)"
    return (
        "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


class MethodOption(click.Option):
    """``--method``: its help lists the methods registered at the time it is shown."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = method_help_text()
        return super().get_help_record(ctx)


method_option = click.option(
    "--method",
    "-m",
    "methods",
    cls=MethodOption,
    multiple=True,
    help="Method(s), repeated or comma-separated [default: rollout].",
)


def _bad(message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint="'--method' / '-m'")


def _value(method: str, key: str, text: str, default: Any) -> Any:
    """``text`` read as the type of ``default``."""
    shown = f"-m {method}:{key}={text}"
    lowered = text.strip().lower()
    if isinstance(default, bool):
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _bad(f"{shown}: {key} of {method} is true or false, got {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise _bad(f"{shown}: {key} of {method} is an integer, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise _bad(f"{shown}: {key} of {method} is a number, got {text!r}") from None
    if isinstance(default, str):  # booleans too, for options like low_memory="auto"
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_methods(values: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    """``{method: options}`` from the repeated ``--method`` values, in the order given, each
    method once; ``{"rollout": {}}`` when none is given.

    Raises:
        click.BadParameter: an unknown method (the message lists the registered ones), an
            unknown option (listing the method's options), a value of the wrong type, an
            option without a method, or one method given twice with different options.

    Example:
        >>> parse_methods(("rollout:head_fusion=max,discard_ratio=0.1", "chefer"))
        {'rollout': {'head_fusion': 'max', 'discard_ratio': 0.1}, 'chefer': {}}
    """
    from ..interpret.registry import METHODS

    chosen: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for value in values:
        for piece in (p.strip() for p in value.split(",")):
            if not piece:
                continue
            head, _, rest = piece.partition(":")
            settings = rest.split(":") if rest else []
            if "=" in head:  # another option of the method before it
                if current is None:
                    raise _bad(f"option {piece!r} comes before any method name")
                settings = [head, *settings]
            else:
                name = head.strip().lower()
                if name not in METHODS:
                    raise _bad(f"unknown method {head.strip()!r}; choose from {', '.join(METHODS)}")
                if name in chosen and settings and chosen[name] != {}:
                    raise _bad(f"method {name!r} is given twice; give its options once")
                current = name
                chosen.setdefault(name, {})
            assert current is not None
            defaults = method_defaults(current)
            for setting in settings:
                key, equals, text = setting.partition("=")
                key = key.strip().lower()
                if not equals or not key:
                    raise _bad(
                        f"-m {current}:{setting}: expected OPTION=VALUE, e.g. "
                        f"{current}:{next(iter(defaults), 'option')}=..."
                    )
                if key not in defaults:
                    known = ", ".join(defaults) or "none"
                    raise _bad(
                        f"-m {current}:{setting}: {current} has no option {key!r} "
                        f"(its options: {known})"
                    )
                chosen[current][key] = _value(current, key, text.strip(), defaults[key])
    return chosen or {DEFAULT_METHOD: {}}


def method_options(chosen: Mapping[str, Mapping[str, Any]], seed: int) -> dict[str, dict[str, Any]]:
    """``{name: options}`` with ``seed`` added for every method whose constructor takes one
    and whose options do not set it."""
    from ..interpret.registry import METHODS

    return {
        name: ({"seed": seed} if "seed" in METHODS[name].params else {}) | dict(options)
        for name, options in chosen.items()
    }


def check_method_options(model: Any, options: Mapping[str, Mapping[str, Any]]) -> None:
    """Build each method on ``model`` once, so that a value the method refuses (``ValueError``)
    is reported as bad usage naming the method and its options before any work starts.
    Other errors (a model without the interface a method needs) are left to the caller."""
    from ..interpret.registry import make_interpreter

    for name, settings in options.items():
        try:
            make_interpreter(name, model, **settings)
        except ValueError as error:
            given = ",".join(f"{k}={v}" for k, v in settings.items() if k != "seed")
            shown = f"-m {name}:{given}" if given else f"-m {name}"
            raise _bad(f"{shown}: {error}") from error

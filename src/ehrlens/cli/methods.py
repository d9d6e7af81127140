"""``--method``: method names (and their options) as the command line takes them.

The registry (``ehrlens.interpret.registry``) is imported only when a value is checked or the
help of ``--method`` is shown, never when the command is built.
"""

from __future__ import annotations

from typing import Any

import click


def method_help_text() -> str:
    """Help of ``--method``: every registered method with its summary, read from the registry
    when the help is shown (so methods registered after import are listed too)."""
    from ..interpret.registry import method_help

    width = max((len(name) for name, _ in method_help()), default=0)
    lines = [f"{name:{width}s}  {summary}" for name, summary in method_help()]
    return "Method(s), repeated or comma-separated [default: rollout]:\n\n\b\n" + "\n".join(lines)


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


def parse_methods(values: tuple[str, ...]) -> list[str]:
    """Method names from the repeated, comma-separated ``--method`` values, in order, each
    once; ``["rollout"]`` when none is given. An unknown name is a :class:`click.BadParameter`
    listing the registered ones."""
    from ..interpret.registry import METHODS

    names = [m.strip() for value in values for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise click.BadParameter(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names)) or ["rollout"]


def method_options(names: list[str], seed: int) -> dict[str, dict[str, Any]]:
    """``{name: options}``: ``seed`` goes to every method whose constructor takes one."""
    from ..interpret.registry import METHODS

    return {name: ({"seed": seed} if "seed" in METHODS[name].params else {}) for name in names}

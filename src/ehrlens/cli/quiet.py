"""How the ``ehrlens`` command shows warnings, and what ``-q`` silences.

The library's own warnings (classes defined in ``ehrlens``: skipped bad rows, a split too
small for its metrics, ...) are printed as one line, ``warning: <message>``, on stderr, with
or without ``-q``. With ``-q``, warnings of other libraries (scikit-learn's undefined-metric
warnings, PyTorch's, ...) are dropped, and the loggers of Ray and other libraries report
errors only; without it they are shown as Python shows them. While a command runs, each
warning is shown once per place that issues it, whatever filters the caller had set.

Example:
    >>> with command_output(quiet=True):
    ...     warnings.warn("hidden under --quiet")
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import click

#: Loggers set to ERROR by ``-q``.
QUIET_LOGGERS = ("ray", "ray.data", "sklearn", "py.warnings", "torch", "transformers", "urllib3")


def is_ehrlens_warning(category: type[Warning]) -> bool:
    """``True`` for warning classes defined in ehrlens."""
    return category.__module__.split(".")[0] == "ehrlens"


def warn(message: str) -> None:
    """Print ``warning: message`` (yellow) on stderr."""
    click.secho(f"warning: {message}", fg="yellow", err=True)


@contextmanager
def command_output(quiet: bool) -> Iterator[None]:
    """Show warnings while a command runs as described in the module docstring."""
    with warnings.catch_warnings():
        original = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if is_ehrlens_warning(category):
                warn(str(message))
            elif not quiet:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("default")  # shown once per place, never raised as errors
        if not quiet:
            yield
            return
        levels: dict[str, Any] = {}
        for name in QUIET_LOGGERS:
            logger = logging.getLogger(name)
            levels[name] = logger.level
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)

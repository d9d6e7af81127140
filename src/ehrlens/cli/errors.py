"""Exit codes of the ``ehrlens`` command and the decorators that map errors onto them.

Imports neither torch nor the library's heavy layers: ``ehrlens --help`` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn

import click

from ..core.errors import UsageValueError
from ..core.files import OutputConflictError

#: Exit codes, also listed in ``ehrlens --help``.
EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_OUTPUT_CONFLICT = 3
EXIT_INTERRUPTED = 130

EPILOG = (
    "Exit codes: 0 success; 1 bad input (data, schema or model: the message names the file, "
    "row, sample or feature); 2 bad command-line usage; 3 the output already holds something "
    "this run would overwrite, or another run is writing it (nothing was changed; pass "
    "--overwrite to replace files); 130 interrupted (re-run the same command to resume "
    "`explain`)."
)


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit with ``code``."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into a one-line message and a documented exit code; show warnings
    as :mod:`ehrlens.cli.quiet` describes (``-q``: the command's ``quiet`` argument)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .quiet import command_output

        try:
            with command_output(bool(kwargs.get("quiet", False))):
                return command(*args, **kwargs)
        except OutputConflictError as error:
            fail(str(error), EXIT_OUTPUT_CONFLICT)
        except UsageValueError as error:
            fail(_command_line_terms(str(error)), EXIT_USAGE)
        except KeyError as error:
            fail(f"missing key {error}", EXIT_BAD_INPUT)
        except (ValueError, TypeError, OSError, ImportError) as error:
            fail(_command_line_terms(str(error)), EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume", EXIT_INTERRUPTED)

    return wrapper


#: Library keyword arguments named in error messages -> their command-line spelling.
_TERMS = {"on_bad_rows='skip'": "--on-bad-rows skip"}


def _command_line_terms(message: str) -> str:
    for library, option in _TERMS.items():
        message = message.replace(library, option)
    return message


def writes(*options: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Hold the output lock of each named option (unset ones skipped) while the command runs:
    one writer per output; a second one exits 3 naming the first (see
    :mod:`ehrlens.core.locks`). Goes below :func:`handle_errors`."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from ..core.locks import output_locks

            with output_locks(*(kwargs.get(option) for option in options)):
                return command(*args, **kwargs)

        return wrapper

    return decorate

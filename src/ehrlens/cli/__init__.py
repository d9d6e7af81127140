"""Command line: ``ehrlens --help``. Needs the extra ``ehrlens[cli]`` (click, pyarrow, pandas)."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``ehrlens`` command."""
    try:
        from .app import main as app
    except ImportError as error:
        sys.stderr.write(
            f"error: the ehrlens command needs its extra: pip install 'ehrlens[cli]' ({error})\n"
        )
        raise SystemExit(1) from error
    app()

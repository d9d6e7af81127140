"""The command line as the CLI tests call it: ``invoke`` runs ``ehrlens ARGS`` in this process
and asserts the exit code; ``TINY_TRAIN`` trains the smallest model the tests need."""

from __future__ import annotations

from click.testing import CliRunner

from ehrlens.cli.app import main

TINY_TRAIN = ["--epochs", "1", "--embedding-dim", "16", "--layers", "1", "--heads", "2", "-q"]


def invoke(*args, expect: int = 0):
    """``ehrlens ARGS`` in this process; asserts the exit code (the output on failure)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (
        f"exit {result.exit_code} (expected {expect})\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}\n{result.exception!r}"
    )
    return result

"""Command-line helpers of the file-and-run robustness tests: the command in this process
(:func:`invoke`) or as a real process (:func:`spawn`, :func:`run`), and snapshots of folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# re-exported: the robustness tests import them from here
from _cli_invoke import TINY_TRAIN as TINY_TRAIN
from _cli_invoke import invoke as invoke

SRC = str(Path(__file__).resolve().parents[2] / "src")


def env() -> dict[str, str]:
    """This environment with the sources under test first on the path, one thread each."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": SRC + (os.pathsep + path if path else ""),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def spawn(*args) -> subprocess.Popen:
    """``python -m ehrlens ARGS`` as a separate process (stdout and stderr piped, as text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ehrlens", *(str(a) for a in args)],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m ehrlens ARGS`` as a separate process, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "ehrlens", *(str(a) for a in args)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python(code: str, *args, **kwargs) -> subprocess.Popen:
    """``python -c CODE ARGS`` as a separate process with the sources under test."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *(str(a) for a in args)],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def tree(root: Path) -> dict[str, bytes | str | None]:
    """Every path under ``root`` (hidden ones too): file bytes, None for a folder, and
    ``"-> target"`` for a symbolic link."""

    def entry(path: Path) -> bytes | str | None:
        if path.is_symlink():
            return f"-> {os.readlink(path)}"
        return None if path.is_dir() else path.read_bytes()

    return {str(p.relative_to(root)): entry(p) for p in sorted(root.rglob("*"))}

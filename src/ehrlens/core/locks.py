"""One writer per output: an exclusive operating-system file lock held for a whole run.

The lock of an output ``target`` (a folder or a file) is the file ``.<name>.ehrlens-lock``
beside it, locked with ``flock``. The holder writes its process id, host, command and start
time into it, so a second writer is refused with an :class:`OutputLockedError` (exit code 3 on
the command line) that names the holder. The kernel releases the lock when its holder exits,
however it exits, so a lock file left by a killed run is stale by construction: the next run
takes it over. On release the holder removes the file.

Two spellings of one output (``attr``, ``./attr/``, a symbolic link) share one lock: the
target is resolved first. Locks are advisory and need a POSIX system (Linux, macOS); on a
network file system they hold only where it supports ``flock``.

Example:
    >>> with output_lock("results.json"):   # a second process gets OutputLockedError here
    ...     _ = Path("results.json").write_text("{}")
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .files import OutputConflictError, file_kind

LOCK_SUFFIX = ".ehrlens-lock"


class OutputLockedError(OutputConflictError):
    """Another run holds the output's lock; nothing was changed.

    Attributes:
        target: the output that is locked.
        holder: what the holder wrote (``pid``, ``host``, ``command``, ``started``), or ``{}``.
    """

    def __init__(self, target: Path, holder: dict[str, Any]) -> None:
        self.target = target
        self.holder = holder
        if holder:
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')}, since "
                f"{holder.get('started')}: {holder.get('command')}"
            )
        else:
            who = "a process that has not yet said who it is"
        super().__init__(
            f"{target} is being written by another ehrlens run ({who}); nothing was changed. "
            "Wait for that run to finish, or write somewhere else."
        )


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output: ``.<name>.ehrlens-lock`` beside the resolved target.

    Raises:
        OutputConflictError: ``target`` is a symbolic link that loops or leads nowhere
            (dangling), so what would be written is unclear.

    Example:
        >>> lock_path("runs/attr")          # next to the target, in its resolved folder
        PosixPath('/.../runs/.attr.ehrlens-lock')
    """
    resolved = resolve_output(target)
    if not resolved.name:
        raise ValueError(f"{target}: cannot lock the root of a file system")
    return resolved.parent / f".{resolved.name}{LOCK_SUFFIX}"


def resolve_output(target: str | os.PathLike) -> Path:
    """``target`` with every symbolic link resolved; a link that loops, or one that leads
    nowhere, is refused by name rather than followed into a traceback.

    Example:
        >>> resolve_output("attr") == Path("attr").absolute()   # no link on the way
        True
    """
    path = Path(target)
    try:
        resolved = path.resolve(strict=False)
    except (RuntimeError, OSError) as error:  # Python 3.11 says RuntimeError for a loop
        raise OutputConflictError(
            f"{target}: a symbolic link loop ({error}); nothing was changed. Remove the link or "
            "write somewhere else."
        ) from error
    if os.path.islink(path) and not os.path.exists(path):
        raise OutputConflictError(
            f"{target} is a symbolic link to {os.readlink(path)}, which does not exist; nothing "
            "was changed. Remove the link, or write to the place it names."
        )
    return resolved


def _not_a_lock(path: Path, what: str) -> OutputConflictError:
    return OutputConflictError(
        f"{path} is {what}, not an ehrlens lock file (ehrlens makes its locks as regular files "
        "and never follows or opens anything else there); nothing was changed. Remove it, or "
        "write somewhere else."
    )


def _open_lock_file(path: Path) -> int:
    """Open (creating if absent) the regular file ``path`` without following a symbolic link
    or opening a FIFO, device or socket: anything but a regular file is refused by name."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise _not_a_lock(path, file_kind(mode))
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as error:  # ELOOP: a link put there after the check above
        raise _not_a_lock(path, f"not a regular file ({error.strerror})") from error
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_a_lock(path, file_kind(mode))
    return fd


def _this_command() -> str:
    """This process's command line, with ``python -m ehrlens`` shown as ``ehrlens``."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if program.name == "ehrlens" or (
        program.name == "__main__.py" and program.parent.name == "ehrlens"
    ):
        words = ["ehrlens", *sys.argv[1:]]
    else:
        words = [str(program), *sys.argv[1:]]
    return " ".join(words)[:300]


def _holder_record(command: str | None) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command if command is not None else _this_command(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        record = json.loads(text)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _flock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False when another open file holds it."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def output_lock(target: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of ``target`` for the block; yields the lock file's path.

    Args:
        target: the output folder or file (it need not exist yet; its parent is created).
        command: what the holder is doing, shown to a refused writer (default: ``sys.argv``).

    Raises:
        OutputLockedError: another process, or another open of it in this process, holds the
            lock. Not re-entrant: a block that locks ``target`` again is refused too.

    Example:
        >>> with output_lock("model/", command="ehrlens train"):
        ...     _ = save_model_dir(model, "model/", card)
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = _open_lock_file(path)
        try:
            if not _flock(fd):
                raise OutputLockedError(Path(target), _read_holder(fd))
            # The previous holder removes the file before it lets go: if we opened it before
            # that, our lock is on a file nobody else will find; open the new one instead.
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (
                mine.st_ino,
                mine.st_dev,
            ):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_record(command)).encode(), 0)
        os.fsync(fd)
        yield path
    finally:
        try:
            _remove_if_same(path, os.fstat(fd))  # still ours: nobody removes a held lock
        finally:
            os.close(fd)  # releases the lock


def _remove_if_same(path: Path, mine: os.stat_result) -> None:
    """Remove ``path`` only while it is still the file ``mine`` describes."""
    try:
        current = os.lstat(path)
    except FileNotFoundError:
        return
    if (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
        path.unlink(missing_ok=True)


@contextmanager
def output_locks(*targets: str | os.PathLike | None, command: str | None = None) -> Iterator[None]:
    """Hold the locks of several outputs (``None`` entries are skipped) for the block.

    Example:
        >>> with output_locks("results.json", "curves.png"):
        ...     _ = Path("results.json").write_text("{}")
        ...     _ = Path("curves.png").write_bytes(b"")
    """
    unique = sorted({lock_path(t): t for t in targets if t is not None}.items())
    with ExitStack() as stack:
        for _, target in unique:
            stack.enter_context(output_lock(target, command=command))
        yield

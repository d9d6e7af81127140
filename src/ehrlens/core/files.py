"""Files: atomic writes, the one overwrite rule, safe names for data-derived files, SHA-256.

Every file ehrlens writes goes through :func:`atomic_write`: the content is written to a
temporary file in the same folder, flushed to disk and renamed into place, so an interrupted
run never leaves a half-written file where a complete one (or the user's previous one) was.

Every command checks its outputs with :func:`check_overwrite` before it starts: a file that
exists is replaced only when the user said so (``--overwrite``). Names that come from data
(patient ids, codes, feature names) never become paths: :func:`data_file_name` derives a file
name from a running index and a sanitised label, so a write cannot leave its folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class OutputConflictError(FileExistsError):
    """An output holds something this run did not make, or another run is writing it; nothing
    was changed. The command line exits with code 3."""


def check_overwrite(
    paths: Iterable[str | os.PathLike], overwrite: bool, message: str | None = None
) -> None:
    """The one overwrite rule of every command: refuse to replace files unless told to.

    Args:
        paths: the files the command is about to write.
        overwrite: the user asked to replace existing files (``--overwrite``).
        message: the error's text (default: the existing files and how to replace them).

    Raises:
        OutputConflictError: one of ``paths`` exists (a file, folder or link) and
            ``overwrite`` is false; or, even with ``overwrite``, one of them is something
            a file must not replace (a folder, FIFO, socket or device): ``--overwrite``
            replaces regular files (and symbolic links, never what they point to) only.

    Example:
        >>> check_overwrite([Path("results.json"), Path("curves.png")], overwrite=False)
        >>> check_overwrite([Path("codes.csv")], overwrite=False)
        Traceback (most recent call last):
        ...
        ehrlens.core.files.OutputConflictError: codes.csv exists; pass --overwrite to ...
    """
    existing = [Path(p) for p in paths if os.path.lexists(p)]
    if not existing:
        return
    for path in existing:
        check_replaceable(path)
    if overwrite:
        return
    if message is None:
        if len(existing) == 1:
            message = f"{existing[0]} exists; pass --overwrite to replace it"
        else:
            names = ", ".join(str(p) for p in existing[:3])
            more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            message = f"{names}{more} exist; pass --overwrite to replace them"
        message += "; nothing was changed"
    raise OutputConflictError(message)


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse to put a file where something other than a regular file (or a symbolic link,
    which is replaced, never written through) is: a folder, FIFO, socket or device.

    Raises:
        OutputConflictError: naming ``path`` and what it is.

    Example:
        >>> check_replaceable("report.html")      # absent or a regular file: fine
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OutputConflictError(
            f"{path} is {file_kind(mode)}, not a regular file; ehrlens writes only regular "
            "files and --overwrite never replaces anything else; nothing was changed. "
            "Write somewhere else."
        )


def file_kind(mode: int) -> str:
    """What a file is, in words, from its ``st_mode`` (``os.lstat(path).st_mode``).

    Example:
        >>> file_kind(os.lstat("/dev/null").st_mode)
        'a character device'
    """
    kinds = [
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def data_file_name(index: int, label: str, suffix: str, max_label: int = 40) -> str:
    """A file name for item ``index`` of a listing whose items are named by data.

    The name is the zero-padded index (unique within the listing), then the label with every
    character outside ``A-Z a-z 0-9 _ -`` replaced by ``_`` and cut to ``max_label``
    characters, then ``suffix``. It holds no path separator, never starts with a dot and
    cannot be ``..``, so it stays inside the folder it is joined to; keep the real label inside
    the file or in an index next to it.

    Example:
        >>> data_file_name(3, "P000123", ".png")
        '0003-P000123.png'
        >>> data_file_name(4, "../../escaped", ".png")
        '0004-escaped.png'
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    slug = _UNSAFE.sub("_", str(label)).strip("_")[:max_label]
    return f"{index:04d}-{slug}{suffix}" if slug else f"{index:04d}{suffix}"


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it to ``path`` only if the block succeeds.

    Example:
        >>> with atomic_write("card.json") as f:
        ...     json.dump({"model_id": "3f2a9c01d4e5"}, f)
        >>> Path("card.json").read_text()
        '{"model_id": "3f2a9c01d4e5"}'
    """
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, in hex (read in 1 MiB blocks).

    Example:
        >>> _ = Path("hello.txt").write_text("hello")
        >>> file_sha256("hello.txt")[:16]
        '2cf24dba5fb0a30e'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Files: atomic writes and JSON Lines samples.

Every file ehrlens writes goes through :func:`atomic_write`: the content is written to a
temporary file in the same folder and renamed into place, so an interrupted run never leaves a
half-written file where a complete one (or the user's previous one) was.

Example:
    >>> write_jsonl(cohort.samples, "patients.jsonl")
    >>> samples = read_jsonl("patients.jsonl")
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it to ``path`` only if the block succeeds.

    Example:
        >>> with atomic_write("card.json") as f:
        ...     json.dump(card, f)
    """
    path = Path(path)
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


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot write {value!r} to JSON Lines")
    return value


def write_jsonl(samples: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write one JSON object per sample, atomically. Tuples become lists; tensors, lists.

    Example:
        >>> write_jsonl(cohort.samples, "patients.jsonl")
    """
    path = Path(path)
    with atomic_write(path) as f:
        for sample in samples:
            f.write(json.dumps(_plain(sample), allow_nan=False) + "\n")
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read samples from a JSON Lines file (one object per line; blank lines are skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not valid JSON, not an object, or holds NaN/Infinity; the
            message gives the file and line number.

    Example:
        >>> samples = read_jsonl("patients.jsonl")   # [{"patient_id": ..., ...}, ...]
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    samples = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: not UTF-8 text ({error})") from error
            if not line.strip():
                continue
            try:
                sample = json.loads(line, parse_constant=_reject_constant)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from error
            except _ConstantError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
            except RecursionError:
                raise ValueError(f"{path}:{number}: JSON nested too deeply") from None
            if not isinstance(sample, dict):
                raise ValueError(
                    f"{path}:{number}: expected a JSON object (one patient), got "
                    f"{type(sample).__name__}"
                )
            samples.append(sample)
    if not samples:
        raise ValueError(f"{path}: no samples (the file is empty)")
    return samples


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _ConstantError(f"{name} is not allowed in samples")

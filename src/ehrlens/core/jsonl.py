"""JSON Lines samples: one JSON object per patient and line.

Example:
    >>> write_jsonl(cohort.samples, "patients.jsonl")
    PosixPath('patients.jsonl')
    >>> samples = read_jsonl("patients.jsonl")
    >>> samples[0]["patient_id"], len(samples) == len(cohort.samples)
    ('P000000', True)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import atomic_write
from .ids import find_id_clash


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON types: mappings with string keys, lists, numbers, strings.

    Tuples become lists; numpy arrays and scalars and torch tensors, their ``tolist()``.
    NaN and infinity are refused (JSON has neither).

    Example:
        >>> plain_json({"times": (0.0, 1.5), 1: torch.tensor([2, 3])})
        {'times': [0.0, 1.5], '1': [2, 3]}
    """
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot write {value!r} to JSON Lines")
    return value


def write_jsonl(samples: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write one JSON object per sample, atomically. Tuples become lists; tensors, lists.

    Example:
        >>> write_jsonl(cohort.samples, "patients.jsonl")
        PosixPath('patients.jsonl')
    """
    path = Path(path)
    with atomic_write(path) as f:
        for sample in samples:
            f.write(json.dumps(plain_json(sample), allow_nan=False) + "\n")
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read samples from a JSON Lines file (one object per line; blank lines are skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not valid JSON, not an object, or holds NaN/Infinity; or two
            lines have the same ``patient_id`` (and ``visit_id``), or ids that are equal as
            text (``7`` and ``"7"``). The message gives the file and the line number(s).

    Example:
        >>> samples = read_jsonl("patients.jsonl")   # [{"patient_id": ..., ...}, ...]
        >>> sorted(samples[0])
        ['diagnoses', 'drugs', 'label', 'patient_id', 'procedures']
    """
    path = Path(path)
    samples = []
    lines = []
    for number, _, sample in iter_jsonl(path):
        samples.append(sample)
        lines.append(number)
    if not samples:
        raise ValueError(f"{path}: no samples (the file is empty)")
    clash = find_id_clash(samples)
    if clash is not None:
        where = clash.describe(f"line {lines[clash.first]}", f"line {lines[clash.second]}")
        raise ValueError(f"{path}:{lines[clash.second]}: {where}")
    return samples


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, tuple[int, int], dict[str, Any]]]:
    """``(line number, (start byte, end byte), sample)`` for each non-blank line of ``path``.

    The byte span lets a reader elsewhere (another process, another machine) read that line
    again with :func:`read_jsonl_spans` without scanning the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not UTF-8, not valid JSON, not an object, or holds NaN/Infinity,
            naming the file and the line number.

    Example:
        >>> number, (start, end), sample = next(iter_jsonl("patients.jsonl"))
        >>> number, start, sample["patient_id"]
        (1, 0, 'P000000')
        >>> end == len(Path("patients.jsonl").read_bytes().splitlines(keepends=True)[0])
        True
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            sample = _parse_line(path, number, raw)
            if sample is not None:
                yield number, (start, offset), sample


def read_jsonl_spans(
    path: str | os.PathLike, spans: Sequence[tuple[int, int, int]]
) -> list[dict[str, Any]]:
    """The samples of the given ``(line number, start byte, end byte)`` lines of ``path``
    (from :func:`iter_jsonl`), in the order given.

    Raises:
        ValueError: a span no longer holds one JSON object (the file changed), naming the line.

    Example:
        >>> spans = [(n, start, end) for n, (start, end), _ in iter_jsonl("patients.jsonl")]
        >>> [s["patient_id"] for s in read_jsonl_spans("patients.jsonl", spans[2::-1])]
        ['P000002', 'P000001', 'P000000']
    """
    path = Path(path)
    samples = []
    with path.open("rb") as f:
        for number, start, end in spans:
            f.seek(start)
            sample = _parse_line(path, number, f.read(end - start))
            if sample is None:
                raise ValueError(f"{path}:{number}: the line is blank now; the file changed")
            samples.append(sample)
    return samples


def _parse_line(path: Path, number: int, raw: bytes) -> dict[str, Any] | None:
    """One line as a sample; None for a blank line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}:{number}: not UTF-8 text ({error})") from error
    if not line.strip():
        return None
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
            f"{path}:{number}: expected a JSON object (one patient), got {type(sample).__name__}"
        )
    return sample


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _ConstantError(f"{name} is not allowed in samples")

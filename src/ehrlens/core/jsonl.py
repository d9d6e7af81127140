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
from collections.abc import Mapping, Sequence
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
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    samples = []
    lines = []
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
            lines.append(number)
    if not samples:
        raise ValueError(f"{path}: no samples (the file is empty)")
    clash = find_id_clash(samples)
    if clash is not None:
        where = clash.describe(f"line {lines[clash.first]}", f"line {lines[clash.second]}")
        raise ValueError(f"{path}:{lines[clash.second]}: {where}")
    return samples


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _ConstantError(f"{name} is not allowed in samples")

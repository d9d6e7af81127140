"""A model directory: weights with processors (``model.pt``) plus a JSON card of the run.

The card says what was trained, on what, how, and how well, so a model found on disk months
later can be trusted or questioned: model class and hyperparameters, the data file and its
SHA-256, the split, per-epoch history, validation and test metrics, seed, versions and the
model's fingerprint (the ``model_id`` written next to every attribution).

A directory is complete or refused: the card is written last and removed first when a model is
saved over another, so a folder with ``model.pt`` but no ``card.json`` is a save that did not
finish, and :func:`load_model_dir` refuses it (:class:`IncompleteModelDirError`).

Example:
    >>> save_model_dir(model, "runs/transformer", card={"training": {"epochs": 8}})
    PosixPath('runs/transformer')
    >>> model, card = load_model_dir("runs/transformer")
    >>> card["training"], card["model_id"] == model_fingerprint(model)
    ({'epochs': 8}, True)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..core import __version__
from ..core.files import atomic_write, file_sha256
from .base import BaseModel


def model_fingerprint(model: torch.nn.Module) -> str:
    """12 hex digits of a SHA-256 over the model's class, hyperparameters and weights.

    Two models with the same fingerprint give the same scores; any change of weights changes it.

    Example:
        >>> len(model_fingerprint(model))   # 12 hexadecimal digits, e.g. '3f2a9c01d4e5'
        12
    """
    digest = hashlib.sha256(type(model).__name__.encode())
    digest.update(repr(sorted(getattr(model, "hparams", {}).items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


WEIGHTS = "model.pt"
CARD = "card.json"


class IncompleteModelDirError(ValueError):
    """A model directory holds ``model.pt`` without ``card.json``: its save did not finish."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"{path}: incomplete model directory ({WEIGHTS} without {CARD}: the run that wrote "
            "it stopped before it finished); train again with --overwrite (or save_model_dir) "
            "to replace it, or delete the folder"
        )


def save_model_dir(
    model: BaseModel, path: str | os.PathLike, card: dict[str, Any] | None = None
) -> Path:
    """Write ``model.pt`` and ``card.json`` into ``path`` (created if needed), each atomically.

    The card gets ``model_id``, ``model_class``, ``hparams``, ``schema`` and versions added to
    what ``card`` holds. It is written last, and an existing one is removed before the weights
    are replaced: a save that stops half-way leaves a folder that is refused as incomplete,
    never one that pairs new weights with an old card.

    Example:
        >>> save_model_dir(model, "runs/transformer", card={"note": "first try"})
        PosixPath('runs/transformer')
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CARD).unlink(missing_ok=True)  # the card marks a finished save
    model.save(path / WEIGHTS)
    record = dict(card or {})
    record.update(
        model_id=model_fingerprint(model),
        model_class=type(model).__name__,
        hparams=dict(model.hparams),
        input_schema=model.schema.input_schema,
        output_schema=model.schema.output_schema,
        versions={
            "ehrlens": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    with atomic_write(path / CARD) as f:
        json.dump(record, f, indent=2, sort_keys=True, default=str)
    return path


#: The files a model directory's behaviour depends on, all covered by :func:`model_dir_sha256`.
TRUSTED_FILES = (CARD, WEIGHTS)


def _directory_digest(card_bytes: bytes, weights_sha256: str) -> str:
    digest = hashlib.sha256(b"ehrlens model directory\n")
    digest.update(f"{CARD}\0{hashlib.sha256(card_bytes).hexdigest()}\n".encode())
    digest.update(f"{WEIGHTS}\0{weights_sha256}\n".encode())
    return digest.hexdigest()


def model_dir_sha256(path: str | os.PathLike) -> str:
    """The trusted checksum of a model directory: a SHA-256 (hex) over every file its
    behaviour depends on (:data:`TRUSTED_FILES`: ``card.json``, whose split, classes and
    schema decide what is explained, and ``model.pt``), each by name and content. This is the
    value ``--model-sha256`` / ``load_model_dir(expected_sha256=...)`` take; ``ehrlens train``
    prints it.

    Example:
        >>> checksum = model_dir_sha256("model")       # a saved model directory
        >>> len(checksum), checksum == model_dir_sha256("model")
        (64, True)
    """
    path = Path(path)
    return _directory_digest((path / CARD).read_bytes(), file_sha256(path / WEIGHTS))


def _check_directory_sha256(path: Path, card_bytes: bytes, expected: str) -> None:
    if not isinstance(expected, str) or len(expected) != 64:
        raise ValueError(f"expected_sha256 must be 64 hexadecimal digits, got {expected!r}")
    weights = file_sha256(path / WEIGHTS)
    actual = _directory_digest(card_bytes, weights)
    if actual == expected.lower():
        return
    hint = ""
    if weights == expected.lower():
        hint = (
            f" The value given is the SHA-256 of {WEIGHTS} alone; the trusted checksum covers "
            f"{CARD} too (its split and classes decide what is explained), so ask the model's "
            "author for the directory's checksum (`ehrlens train` prints it)."
        )
    raise ValueError(
        f"{path}: the model directory's SHA-256 ({', '.join(TRUSTED_FILES)}) is not the "
        f"expected {expected.lower()} (--model-sha256) but {actual}; one of its files changed "
        f"since the checksum was taken, so it is not loaded.{hint}"
    )


def load_model_dir(
    path: str | os.PathLike, *, expected_sha256: str | None = None
) -> tuple[BaseModel, dict[str, Any]]:
    """Load ``(model, card)`` from a model directory; the model is in eval mode.

    ``expected_sha256`` (hex, from :func:`model_dir_sha256`) refuses the directory unless
    every file it depends on (``card.json`` and ``model.pt``) is the trusted one. The card is
    checked for its shape (:func:`check_card`).

    Raises:
        FileNotFoundError: ``path`` is not a model directory (no ``model.pt``).
        IncompleteModelDirError: ``model.pt`` without ``card.json`` (a save that did not
            finish; a ``ValueError``).
        ValueError: the checkpoint or card is unreadable, or the card's ``model_id`` does not
            match the weights (the files come from different runs).

    Example:
        >>> model, card = load_model_dir("model/")
        >>> card["model_id"] == model_fingerprint(model), sorted(card["test_metrics"])
        (True, ['accuracy', 'f1', 'loss', 'pr_auc', 'roc_auc'])
    """
    path = Path(path)
    weights = path / WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{path}: not a model directory (no {WEIGHTS})")
    if not (path / CARD).exists():
        raise IncompleteModelDirError(path)
    card_bytes = (path / CARD).read_bytes()
    if expected_sha256 is not None:
        _check_directory_sha256(path, card_bytes, expected_sha256)
    model = BaseModel.load(weights)
    try:
        card: dict[str, Any] = json.loads(card_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path / CARD}: not valid JSON ({error})") from error
    check_card(card, path / CARD)
    expected = card.get("model_id")
    actual = model_fingerprint(model)
    if expected is not None and expected != actual:
        raise ValueError(
            f"{path}: {CARD} describes model {expected} but {WEIGHTS} holds model {actual}; "
            "the two files come from different runs"
        )
    return model, card


#: Card entries that must be JSON objects when present (``null`` is not one).
_OBJECT_ENTRIES = ("data", "task", "hparams", "input_schema", "output_schema", "test_metrics")


def check_card(card: Any, where: str | os.PathLike = CARD) -> None:
    """Refuse a card of the wrong shape, saying what is wrong: it must be a JSON object;
    ``data``, ``task``, ``hparams``, schemas and ``test_metrics`` objects when present;
    ``data.split`` an object; ``model_id`` a string; ``task.classes`` a list of names and
    ``warnings`` a list.

    Raises:
        ValueError: naming the file and the entry.

    Example:
        >>> check_card([], "model/card.json")
        Traceback (most recent call last):
        ...
        ValueError: model/card.json: a model card must be a JSON object, got an array; ...
    """
    names = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}

    def kind(value: Any) -> str:
        return names.get(type(value), type(value).__name__)

    if not isinstance(card, dict):
        raise ValueError(
            f"{where}: a model card must be a JSON object, got {kind(card)}; the file was "
            "edited or is not an ehrlens card"
        )
    problems = [
        f"'{key}' must be an object, got {kind(card[key])}"
        for key in _OBJECT_ENTRIES
        if key in card and not isinstance(card[key], dict)
    ]
    data = card.get("data")
    if isinstance(data, dict) and "split" in data and not isinstance(data["split"], dict):
        problems.append(f"'data.split' must be an object, got {kind(data['split'])}")
    if "model_id" in card and not isinstance(card["model_id"], str):
        problems.append(f"'model_id' must be a string, got {kind(card['model_id'])}")
    task = card.get("task")
    if isinstance(task, dict) and task.get("classes") is not None:
        classes = task["classes"]
        if not isinstance(classes, list) or not all(
            isinstance(c, (str, int, float)) for c in classes
        ):
            problems.append("'task.classes' must be a list of class names")
    if "warnings" in card and not isinstance(card["warnings"], list):
        problems.append(f"'warnings' must be a list, got {kind(card['warnings'])}")
    if problems:
        raise ValueError(f"{where}: not a valid model card: {'; '.join(problems)}")

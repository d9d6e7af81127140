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
from ..core.files import atomic_write
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


def load_model_dir(
    path: str | os.PathLike, *, expected_sha256: str | None = None
) -> tuple[BaseModel, dict[str, Any]]:
    """Load ``(model, card)`` from a model directory; the model is in eval mode.

    ``expected_sha256`` (hex SHA-256 of ``model.pt``) refuses any other weights file; see
    :meth:`BaseModel.load`.

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
    model = BaseModel.load(weights, expected_sha256=expected_sha256)
    try:
        card: dict[str, Any] = json.loads((path / CARD).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path / CARD}: not valid JSON ({error})") from error
    expected = card.get("model_id")
    actual = model_fingerprint(model)
    if expected is not None and expected != actual:
        raise ValueError(
            f"{path}: {CARD} describes model {expected} but {WEIGHTS} holds model {actual}; "
            "the two files come from different runs"
        )
    return model, card

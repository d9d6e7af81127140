"""ehrlens: explain the predictions of attention-based clinical models.

``import ehrlens`` is light: it does not import torch. ``ehrlens.Trainer`` is loaded on first
use (``from ehrlens import Trainer`` works as usual).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core import __version__

if TYPE_CHECKING:
    from .app.trainer import Trainer

__all__ = ["Trainer", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        from .app.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'ehrlens' has no attribute {name!r}")

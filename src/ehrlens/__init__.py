"""ehrlens: explain the predictions of attention-based clinical models."""

from .app.trainer import Trainer
from .core import __version__

__all__ = ["Trainer", "__version__"]

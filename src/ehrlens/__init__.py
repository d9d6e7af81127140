"""ehrlens: explain the predictions of attention-based clinical models."""

__version__ = "0.1.0"

from .trainer import Trainer

__all__ = ["Trainer", "__version__"]

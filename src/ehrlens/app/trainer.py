"""Trainer: fit a model with early stopping on a validation metric, evaluate, save, load."""

from __future__ import annotations

import copy
import logging
import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.modes import eval_mode
from ..core.progress import progress_bar
from ..data.dataset import move_to_device
from ..metrics.prediction import DEFAULT_METRICS, LOWER_IS_BETTER, compute_metrics
from ..models.base import BaseModel

logger = logging.getLogger(__name__)


class TrainingDivergedError(FloatingPointError, ValueError):
    """Training produced a NaN or infinite loss, gradient or weight; the message names the
    epoch and batch. A ``ValueError`` too, so the command line reports it as bad input (a
    learning rate too large, or data the model cannot fit)."""


def _check_rate(name: str, value: Any) -> float:
    """``value`` as a float when it is a finite number >= 0 (0 freezes the weights)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return value


class Trainer:
    """Train and evaluate an ehrlens model.

    Args:
        model: a :class:`~ehrlens.models.BaseModel`.
        metrics: metric names (default: the task mode's defaults, e.g. ``roc_auc``,
            ``pr_auc``, ``f1``, ``accuracy`` for binary tasks).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else CPU).
        seed: seeds parameter initialisation-independent randomness of training (shuffling,
            dropout), so two runs with the same seed give the same model.
        progress: show progress bars (needs ``tqdm``).

    Example:
        >>> trainer = Trainer(model, metrics=["roc_auc", "pr_auc"], progress=False)
        >>> history = trainer.train(train_loader, val_loader, epochs=2, monitor="roc_auc")
        >>> [record["epoch"] for record in history]
        [1, 2]
        >>> sorted(trainer.evaluate(test_loader))
        ['loss', 'pr_auc', 'roc_auc']
    """

    def __init__(
        self,
        model: BaseModel,
        metrics: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if not isinstance(model, BaseModel):
            raise TypeError(f"Trainer needs a BaseModel, got {type(model).__name__}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device)
        self.metrics = list(metrics) if metrics is not None else DEFAULT_METRICS[model.mode]
        self.seed = seed
        self.progress = progress
        self.history: list[dict[str, float]] = []

    def train(
        self,
        train_loader: DataLoader,
        val_loader: DataLoader | None = None,
        epochs: int = 5,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        monitor: str | None = "roc_auc",
        patience: int | None = None,
        max_grad_norm: float | None = 1.0,
    ) -> list[dict[str, float]]:
        """Fit with AdamW; keep and restore the best weights by ``monitor`` on validation.

        Args:
            train_loader / val_loader: loaders from :func:`ehrlens.data.get_dataloader`.
            epochs: passes over ``train_loader``.
            lr / weight_decay: AdamW settings.
            monitor: validation metric (or ``"loss"``) that picks the best epoch;
                ``None`` keeps the last epoch.
            patience: stop after this many epochs without improvement (``None``: never).
            max_grad_norm: gradient clipping norm (``None``: no clipping).

        Returns:
            One dict per epoch: ``epoch``, ``train_loss`` and ``val_*`` metrics.

        Raises:
            ValueError: ``lr`` or ``weight_decay`` not finite and >= 0, ``epochs`` below 0,
                or an unknown ``monitor``.
            TrainingDivergedError: the loss or the gradient norm of a batch is NaN or
                infinite, or the weights are after an epoch (naming the epoch and batch);
                the model keeps the weights it had then, so do not save it.
        """
        lr = _check_rate("lr", lr)
        weight_decay = _check_rate("weight_decay", weight_decay)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if monitor is not None and monitor != "loss" and monitor not in self.metrics:
            raise ValueError(f"monitor {monitor!r} is not among the metrics {self.metrics}")
        torch.manual_seed(self.seed)
        generator = getattr(train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(self.seed)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        lower_better = monitor in LOWER_IS_BETTER
        best_score, best_state, stale = -math.inf, None, 0
        self.history = []
        for epoch in range(1, epochs + 1):
            self.model.train()
            losses = []
            bar = progress_bar(train_loader, self.progress, desc=f"epoch {epoch}")
            for number, batch in enumerate(bar, start=1):
                optimizer.zero_grad(set_to_none=True)
                loss = self.model(**move_to_device(batch, self.device))["loss"]
                where = f"epoch {epoch}, batch {number}"
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"{where}: training loss is {loss.item()}; training stopped (is the "
                        f"learning rate {lr:g} too large?)"
                    )
                loss.backward()
                if max_grad_norm is not None:
                    norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
                    if not torch.isfinite(norm):
                        raise TrainingDivergedError(
                            f"{where}: the gradient norm is {norm.item()}; training stopped"
                        )
                try:
                    optimizer.step()
                except RuntimeError as error:  # e.g. a step size beyond float range
                    raise TrainingDivergedError(
                        f"{where}: the optimizer step failed ({error}); training stopped (is "
                        f"the learning rate {lr:g} too large?)"
                    ) from error
                losses.append(loss.item())
            if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
                raise TrainingDivergedError(
                    f"epoch {epoch}: the weights became NaN or infinite (after batch "
                    f"{len(losses)}); training stopped (is the learning rate {lr:g} too large?)"
                )
            record: dict[str, float] = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            if val_loader is not None:
                record.update({f"val_{k}": v for k, v in self.evaluate(val_loader).items()})
            self.history.append(record)
            logger.info("epoch %d: %s", epoch, record)
            if val_loader is None or monitor is None:
                continue
            score = record[f"val_{monitor}"]
            score = -score if lower_better else score
            if score > best_score or best_state is None:
                best_score, best_state, stale = score, copy.deepcopy(self.model.state_dict()), 0
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    logger.info("early stop after epoch %d", epoch)
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return self.history

    @torch.no_grad()
    def inference(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, float]:
        """``(y_true, y_prob, mean loss)`` over a loader, in eval mode."""
        y_true, y_prob, losses, sizes = [], [], [], []
        with eval_mode(self.model):
            for batch in progress_bar(loader, self.progress, desc="evaluate"):
                out = self.model(**move_to_device(batch, self.device))
                y_prob.append(out["y_prob"].float().cpu().numpy())
                if "y_true" in out:
                    y_true.append(out["y_true"].float().cpu().numpy())
                    losses.append(out["loss"].item())
                    sizes.append(len(out["y_true"]))
        loss = float(np.average(losses, weights=sizes)) if losses else float("nan")
        truth = np.concatenate(y_true) if y_true else np.empty(0)
        return truth, np.concatenate(y_prob), loss

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        """Metrics and mean loss on a labelled loader."""
        y_true, y_prob, loss = self.inference(loader)
        if y_true.size == 0:
            raise ValueError("evaluate needs labels; this loader's dataset has none")
        return {**compute_metrics(self.model.mode, y_true, y_prob, self.metrics), "loss": loss}

    def save(self, path: str | os.PathLike) -> None:
        """Save the model with its processors (see :meth:`BaseModel.save`)."""
        self.model.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, **kwargs: Any) -> Trainer:
        """A Trainer around a model loaded with :meth:`BaseModel.load`."""
        return cls(BaseModel.load(path), device=device, **kwargs)

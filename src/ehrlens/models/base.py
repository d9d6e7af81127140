"""BaseModel: schema-aware outputs and losses, and save/load that keeps the processors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from ..data.dataset import RESERVED_KEYS, FittedSchema, SampleDataset

CHECKPOINT_FORMAT = "ehrlens-model"
CHECKPOINT_VERSION = 1


def feature_values(batch: Mapping[str, Any], key: str) -> Tensor:
    """``batch[key]``, or a ValueError naming the missing feature key."""
    if key not in batch:
        present = sorted(k for k in batch if k not in ("masks", "times"))
        raise ValueError(f"batch is missing feature '{key}'; it has keys {present}")
    return batch[key]


class BaseModel(nn.Module):
    """Base of every ehrlens model.

    Reads feature keys, the label key and the task mode from the dataset's fitted schema, turns
    logits into probabilities and a loss, and saves/loads itself with its processors.

    Args:
        dataset: a :class:`~ehrlens.data.SampleDataset` (or its ``.schema``).

    ``forward(**batch)`` returns ``{"logit", "y_prob"}``, plus ``"loss"`` and ``"y_true"`` when
    the batch has labels. Shapes: ``logit``/``y_prob`` ``[batch, output_size]``; binary and
    regression have ``output_size == 1``.
    """

    _registry: ClassVar[dict[str, type[BaseModel]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        BaseModel._registry[cls.__name__] = cls

    def __init__(self, dataset: SampleDataset | FittedSchema) -> None:
        super().__init__()
        schema = dataset.schema if isinstance(dataset, SampleDataset) else dataset
        if not isinstance(schema, FittedSchema):
            raise TypeError(
                f"expected a SampleDataset or FittedSchema, got {type(dataset).__name__}"
            )
        if len(schema.label_keys) != 1:
            raise ValueError(
                f"models take exactly one label key, the output schema has {schema.label_keys}"
            )
        self.schema = schema
        self.feature_keys: list[str] = schema.feature_keys
        self.label_keys: list[str] = schema.label_keys
        self.label_key: str = schema.label_keys[0]
        label_processor = schema.output_processors[self.label_key]
        self.mode: str = label_processor.schema
        self.output_size: int = label_processor.output_size
        self.hparams: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def get_embedding_layers(self) -> dict[str, nn.Module]:
        """Per feature key, the module embedding each input unit on its own.

        Its output is ``[batch, *input_positions, dim]`` (a code, a visit's code, a time step,
        a vector element): what gradient methods such as
        :class:`~ehrlens.interpret.IntegratedGradients` attribute to.
        """
        embeddings = getattr(self, "embeddings", None)
        if embeddings is None:
            raise NotImplementedError(f"{type(self).__name__} has no per-feature embeddings")
        return {key: embeddings[key].unit for key in self.feature_keys}

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        """Refuse a batch the model cannot read correctly, naming the key and the sample.

        Checks: every feature key present and a tensor; no unexpected keys (a typo would
        otherwise be ignored); one batch size for all features; tensors on the model's
        device; numeric features finite. Called at the start of every ``forward``.
        """
        allowed = {*self.feature_keys, *self.label_keys, *RESERVED_KEYS}
        unexpected = sorted(k for k in batch if k not in allowed)
        if unexpected:
            raise ValueError(
                f"batch has unexpected key(s) {unexpected}; this model reads features "
                f"{self.feature_keys}, label {self.label_keys} and {sorted(RESERVED_KEYS)}"
            )
        sizes: dict[str, int] = {}
        device = self.device
        ids = batch.get("patient_id")
        for key in self.feature_keys:
            values = feature_values(batch, key)
            if not isinstance(values, Tensor):
                raise TypeError(
                    f"feature '{key}': expected a tensor, got {type(values).__name__}; "
                    "build batches with ehrlens.data.get_dataloader"
                )
            if values.device != device:
                raise ValueError(
                    f"feature '{key}' is on {values.device} but the model is on {device}; "
                    "move the batch with ehrlens.data.move_to_device(batch, model.device)"
                )
            if values.dim() == 0:
                raise ValueError(f"feature '{key}': expected [batch, ...], got a scalar")
            sizes[key] = values.shape[0]
            if values.is_floating_point():
                finite = torch.isfinite(values).reshape(values.shape[0], -1).all(dim=1)
                if not bool(finite.all()):
                    index = int((~finite).nonzero()[0, 0])
                    who = f" (patient_id={ids[index]!r})" if ids is not None else ""
                    raise ValueError(
                        f"feature '{key}': sample {index}{who} has NaN or infinite values"
                    )
        if len(set(sizes.values())) > 1:
            raise ValueError(f"features disagree on the batch size: {sizes}")

    def prepare_outputs(self, logit: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Probabilities, and loss/targets when ``batch`` holds the label.

        Args:
            logit: ``[batch, output_size]``.
            batch: the batch dict passed to ``forward``.
        """
        out = {"logit": logit, "y_prob": self.probabilities(logit)}
        if self.label_key in batch:
            y_true = batch[self.label_key].to(logit.device)
            out["loss"] = self.loss(logit, y_true)
            out["y_true"] = y_true
        return out

    def probabilities(self, logit: Tensor) -> Tensor:
        """sigmoid (binary, multilabel), softmax (multiclass), identity (regression)."""
        if self.mode in ("binary", "multilabel"):
            return torch.sigmoid(logit)
        if self.mode == "multiclass":
            return torch.softmax(logit, dim=-1)
        return logit

    def loss(self, logit: Tensor, y_true: Tensor) -> Tensor:
        """BCE (binary, multilabel), cross-entropy (multiclass), MSE (regression)."""
        if self.mode in ("binary", "multilabel"):
            return F.binary_cross_entropy_with_logits(logit, y_true.to(logit.dtype))
        if self.mode == "multiclass":
            return F.cross_entropy(logit, y_true.long())
        return F.mse_loss(logit, y_true.to(logit.dtype))

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> Path:
        """Write weights, hyperparameters and fitted processors to one file, atomically.

        The file is written next to ``path`` and renamed into place, so an interrupted save
        never leaves a truncated checkpoint where a good one was.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "ehrlens_version": __version__,
            "model_class": type(self).__name__,
            "hparams": dict(self.hparams),
            "schema": self.schema.state_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> BaseModel:
        """Rebuild a saved model (any subclass) with its processors; returns it in eval mode.

        Raises:
            ValueError: the file is not an ehrlens checkpoint, has an unsupported version,
                names an unknown model class, or its weights do not fit the architecture.
        """
        path = Path(path)
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:
            raise ValueError(f"{path}: not a readable ehrlens checkpoint ({error})") from error
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not an ehrlens model checkpoint")
        version = checkpoint.get("format_version")
        if version != CHECKPOINT_VERSION:
            raise ValueError(
                f"{path}: checkpoint format version {version!r} is not supported "
                f"(this ehrlens {__version__} reads version {CHECKPOINT_VERSION})"
            )
        name = checkpoint["model_class"]
        model_class = BaseModel._registry.get(name)
        if model_class is None:
            raise ValueError(f"{path}: unknown model class {name!r}")
        if not issubclass(model_class, cls):
            raise ValueError(f"{path}: holds a {name}, not a {cls.__name__}")
        schema = FittedSchema.from_state_dict(checkpoint["schema"])
        model = model_class(schema, **checkpoint["hparams"])
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:
            raise ValueError(
                f"{path}: weights do not match a {name} built from the saved schema "
                f"(vocabulary or size mismatch): {error}"
            ) from error
        return model.to(map_location).eval()

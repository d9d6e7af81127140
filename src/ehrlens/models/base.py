"""BaseModel: schema-aware outputs and losses, and save/load that keeps the processors."""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import __version__
from ..core.files import atomic_write, file_sha256
from ..core.outputs import probabilities
from ..core.registry import Registry
from ..data.dataset import RESERVED_KEYS, FittedSchema, SampleDataset

CHECKPOINT_FORMAT = "ehrlens-model"
CHECKPOINT_VERSION = 2  # 2: adds a SHA-256 checksum


def checkpoint_checksum(
    model_class: str,
    hparams: Mapping[str, Any],
    schema: Mapping[str, Any],
    state_dict: Mapping[str, Tensor],
) -> str:
    """SHA-256 of what a checkpoint holds: class, hyperparameters, schema and every weight.

    ``torch.load`` does not verify the archive's CRCs, so a flipped bit in a weight would
    otherwise load silently as a different model. The checksum is not keyed: it detects
    damage, not a deliberate edit (whoever edits the file can recompute it); a SHA-256 of the
    file from a trusted source does (``BaseModel.load(..., expected_sha256=...)``).
    """
    digest = hashlib.sha256()
    header = {"model_class": model_class, "hparams": dict(hparams), "schema": dict(schema)}
    digest.update(json.dumps(header, sort_keys=True, default=repr).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: Fields every checkpoint holds, with their types (checked at load).
_CHECKPOINT_FIELDS = {
    "model_class": str,
    "hparams": dict,
    "schema": dict,
    "state_dict": dict,
    "checksum": str,
}


def _check_vocabulary_sizes(model: BaseModel, state_dict: Mapping[str, Any], path: Path) -> None:
    """Each code feature's saved vocabulary must have one embedding row per id."""
    try:
        units = model.get_embedding_layers()
    except NotImplementedError:
        return
    names = {id(module): name for name, module in model.named_modules()}
    for key, unit in units.items():
        weight = state_dict.get(f"{names.get(id(unit))}.weight")
        if isinstance(unit, nn.Embedding) and isinstance(weight, Tensor) and weight.dim() == 2:
            if weight.shape[0] != unit.num_embeddings:
                raise ValueError(
                    f"{path}: feature '{key}': the saved vocabulary has {unit.num_embeddings} "
                    f"ids but the saved embedding has {weight.shape[0]} rows; the schema and "
                    "the weights do not belong together"
                )


def feature_values(batch: Mapping[str, Any], key: str) -> Tensor:
    """``batch[key]``, or a ValueError naming the missing feature key."""
    if key not in batch:
        present = sorted(k for k in batch if k not in ("masks", "times"))
        raise ValueError(f"batch is missing feature '{key}'; it has keys {present}")
    return batch[key]


#: Model classes by ``short_name``, in order of definition: a class that declares its own
#: ``short_name`` registers itself when it is defined (``BaseModel.__init_subclass__``).
MODEL_REGISTRY: Registry[type[BaseModel]] = Registry(
    "model",
    key=lambda cls: vars(cls).get("short_name"),  # type: ignore[arg-type, return-value]
)


def model_classes() -> dict[str, type[BaseModel]]:
    """``{short name: class}`` of every model class that declares a ``short_name``: the one
    table of model names (command line, workflows, tests), in order of definition.

    Example:
        >>> model_classes()["transformer"]
        <class 'ehrlens.models.transformer.Transformer'>
    """
    return dict(MODEL_REGISTRY)


def model_class(name: str) -> type[BaseModel]:
    """The model class whose ``short_name`` is ``name``.

    Raises:
        ValueError: no model has that name; the message lists the names.

    Example:
        >>> model = model_class("stagenet")(dataset, embedding_dim=32)
        >>> type(model).__name__
        'StageAttentionNet'
    """
    return MODEL_REGISTRY[name]


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
    #: Name on the command line and in :func:`model_classes`, e.g. ``"transformer"``. Each
    #: class declares its own; a subclass that does not is not listed under its parent's.
    short_name: ClassVar[str | None] = None
    #: Hyperparameters that count repeated layers: when loading, each must be at most the
    #: number of saved tensors (every other integer one at most their largest dimension).
    layer_count_hparams: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        short = vars(cls).get("short_name")
        if short is not None:
            taken = MODEL_REGISTRY.get(short)
            if taken is not None and taken.__name__ != cls.__name__:
                raise TypeError(
                    f"model short_name {short!r} of {cls.__qualname__} is already used by "
                    f"{taken.__qualname__}; choose another"
                )
            # a class defined again under the same name (a reloaded module) takes its place
            MODEL_REGISTRY.register(cls, replace=True)
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
        otherwise be ignored); one batch size for all features and labels; tensors on the
        model's device; numeric features, times and labels finite; ``masks`` / ``times``
        entries only for known features, shaped ``[batch, steps]`` like their feature; a
        step mask for every feature whose processor ``needs_step_mask`` (``"timeseries"``:
        without it padded steps would count as real). Called at the start of every
        ``forward``.
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
        self._check_masks_and_times(batch, device)
        self._check_labels(batch, next(iter(sizes.values()), None))

    def _check_masks_and_times(self, batch: Mapping[str, Any], device: torch.device) -> None:
        for group in ("masks", "times"):
            entries = batch.get(group)
            if entries is None:
                continue
            if not isinstance(entries, Mapping):
                raise TypeError(
                    f"batch['{group}'] must be a dict of feature key -> [batch, steps] tensor, "
                    f"got {type(entries).__name__}"
                )
            for key, tensor in entries.items():
                where = f"feature '{key}': batch['{group}']['{key}']"
                if key not in self.feature_keys:
                    raise ValueError(
                        f"batch['{group}'] has key '{key}', which is not a feature of this "
                        f"model ({self.feature_keys})"
                    )
                if not isinstance(tensor, Tensor):
                    raise TypeError(f"{where} must be a tensor, got {type(tensor).__name__}")
                if tensor.device != device:
                    raise ValueError(
                        f"{where} is on {tensor.device} but the model is on {device}; move the "
                        "batch with ehrlens.data.move_to_device(batch, model.device)"
                    )
                expected = tuple(batch[key].shape[:2])
                if tuple(tensor.shape) != expected:
                    raise ValueError(
                        f"{where} has shape {tuple(tensor.shape)}, expected {expected} "
                        "([batch, steps] of the feature's tensor)"
                    )
                if group == "times" and tensor.is_floating_point():
                    finite = torch.isfinite(tensor).all(dim=1)
                    if not bool(finite.all()):
                        index = int((~finite).nonzero()[0, 0])
                        raise ValueError(f"{where}: sample {index} has NaN or infinite times")
                if group == "masks" and tensor.dtype != torch.bool:
                    if not bool(((tensor == 0) | (tensor == 1)).all()):
                        raise ValueError(f"{where} must hold only True/False (or 0/1)")
        masks = batch.get("masks") or {}
        for key, processor in self.schema.input_processors.items():
            if processor.needs_step_mask and key not in masks:
                raise ValueError(
                    f"feature '{key}': batch['masks'] has no step mask for this "
                    f"{processor.schema} feature; without it padded steps would count as "
                    "measurements. Build batches with ehrlens.data.get_dataloader (or "
                    "dataset.collate)"
                )

    def _check_labels(self, batch: Mapping[str, Any], size: int | None) -> None:
        for key in self.label_keys:
            if key not in batch:
                continue
            y = batch[key]
            if not isinstance(y, Tensor):
                raise TypeError(f"label '{key}': expected a tensor, got {type(y).__name__}")
            if y.dim() == 0 or (size is not None and y.shape[0] != size):
                raise ValueError(
                    f"label '{key}': shape {tuple(y.shape)} does not match the batch size "
                    f"{size} of the features"
                )
            if y.is_floating_point():
                finite = torch.isfinite(y.reshape(y.shape[0], -1)).all(dim=1)
                if not bool(finite.all()):
                    index = int((~finite).nonzero()[0, 0])
                    raise ValueError(f"label '{key}': sample {index} has a NaN or infinite label")

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
        return probabilities(logit, self.mode)

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
        state_dict = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        schema = self.schema.state_dict()
        name = type(self).__name__
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "ehrlens_version": __version__,
            "model_class": name,
            "hparams": dict(self.hparams),
            "schema": schema,
            "state_dict": state_dict,
            "checksum": checkpoint_checksum(name, self.hparams, schema, state_dict),
        }
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        map_location: str | torch.device = "cpu",
        *,
        expected_sha256: str | None = None,
    ) -> BaseModel:
        """Rebuild a saved model (any subclass) with its processors; returns it in eval mode.

        The file is checked before anything is built from it: its SHA-256 against
        ``expected_sha256`` when given, then its fields, then the checksum it carries, then
        the hyperparameters against the saved weights (each size must fit the weights' shapes,
        and a model built from them must have exactly the saved tensors' names and shapes).
        Only then is the model constructed, so a file cannot make ``load`` allocate more than
        the weights it holds.

        The checksum detects damage (a flipped bit, a truncated or mixed-up file), not a
        deliberate edit: anyone can recompute it. To trust a file, compare it with a SHA-256
        you obtained from its author (``expected_sha256``, or ``--model-sha256`` on the
        command line).

        Args:
            path: the checkpoint (``model.pt``).
            map_location: device of the returned model.
            expected_sha256: hex SHA-256 of the file's bytes (64 digits, any case); the file
                is refused unless it matches.

        Raises:
            ValueError: the file does not match ``expected_sha256``; is not an ehrlens
                checkpoint; has an unsupported version; lacks a field; names an unknown model
                class; fails its checksum (a corrupt file); holds an invalid schema (e.g. a
                vocabulary with repeated codes) or hyperparameters (a wrong type or range, or
                sizes the saved weights do not have); or its weights do not fit the
                architecture built from the saved schema (vocabulary size).

        Example:
            >>> from ehrlens.core.files import file_sha256
            >>> digest = file_sha256("model/model.pt")    # 64 hexadecimal digits
            >>> type(BaseModel.load("model/model.pt", expected_sha256=digest)).__name__
            'Transformer'
        """
        path = Path(path)
        if expected_sha256 is not None:
            _check_file_sha256(path, expected_sha256)
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
        for field, kind in _CHECKPOINT_FIELDS.items():
            if not isinstance(checkpoint.get(field), kind):
                raise ValueError(
                    f"{path}: checkpoint field '{field}' is missing or not a {kind.__name__} "
                    "(a corrupt file, or one not written by BaseModel.save)"
                )
        state_dict = checkpoint["state_dict"]
        for key, tensor in state_dict.items():
            if not isinstance(key, str) or not isinstance(tensor, Tensor):
                raise ValueError(
                    f"{path}: checkpoint field 'state_dict' maps {key!r} to a "
                    f"{type(tensor).__name__}, not a tensor (a corrupt file)"
                )
        name = checkpoint["model_class"]
        model_class = BaseModel._registry.get(name)
        if model_class is None:
            raise ValueError(f"{path}: unknown model class {name!r}")
        if not issubclass(model_class, cls):
            raise ValueError(f"{path}: holds a {name}, not a {cls.__name__}")
        hparams = checkpoint["hparams"]
        expected = checkpoint_checksum(name, hparams, checkpoint["schema"], state_dict)
        if expected != checkpoint["checksum"]:
            raise ValueError(
                f"{path}: checksum mismatch: the weights, schema or hyperparameters are not "
                "those that were saved (a corrupt file); refusing to load it. The checksum "
                "catches damage, not deliberate edits: to trust a file, load it with "
                "expected_sha256= (--model-sha256) from its author"
            )
        try:
            schema = FittedSchema.from_state_dict(checkpoint["schema"])
        except ValueError as error:
            raise ValueError(f"{path}: the saved schema is invalid: {error}") from error
        _check_sizes_fit_weights(model_class, hparams, state_dict, path)
        try:
            with torch.device("meta"):  # no memory: shapes only
                skeleton = model_class(schema, **hparams)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: cannot build a {name} from the saved hyperparameters {hparams}: {error}"
            ) from error
        _check_vocabulary_sizes(skeleton, state_dict, path)
        _check_shapes(skeleton, state_dict, hparams, path)
        model = model_class(schema, **hparams)
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as error:  # pragma: no cover - the shapes were compared above
            raise ValueError(
                f"{path}: weights do not match a {name} built from the saved schema "
                f"(vocabulary or size mismatch): {error}"
            ) from error
        return model.to(map_location).eval()


def _check_file_sha256(path: Path, expected: Any) -> None:
    """Refuse ``path`` unless its bytes have the SHA-256 ``expected`` (hex, any case)."""
    if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expected.strip()):
        raise ValueError(
            f"expected_sha256 must be 64 hexadecimal digits (a SHA-256 of {path.name}), "
            f"got {expected!r:.80}"
        )
    if not path.is_file():
        raise ValueError(f"{path}: not a readable ehrlens checkpoint (no such file)")
    actual = file_sha256(path)
    if actual != expected.strip().lower():
        raise ValueError(
            f"{path}: SHA-256 {actual} is not the expected {expected.strip().lower()}; "
            "refusing to load a file other than the one you trust"
        )


def _check_sizes_fit_weights(
    model_class: type[BaseModel],
    hparams: Mapping[str, Any],
    state_dict: Mapping[str, Tensor],
    path: Path,
) -> None:
    """Every integer hyperparameter must be a size the saved weights can have: a layer count
    at most the number of saved tensors, any other size at most their largest dimension.

    Checked before a model is built, so a hyperparameter like ``embedding_dim=10**6`` in an
    edited file is refused instead of allocating terabytes.
    """
    largest = max((d for t in state_dict.values() for d in t.shape), default=0)
    counts = model_class.layer_count_hparams
    for key, value in hparams.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            continue
        bound, what = (
            (len(state_dict), "the number of saved tensors")
            if key in counts
            else (largest, "the largest dimension of any saved tensor")
        )
        if value > bound:
            raise ValueError(
                f"{path}: saved hyperparameter {key}={value} is larger than {what} ({bound}); "
                "the hyperparameters and the weights do not belong together"
            )


def _check_shapes(
    skeleton: BaseModel, state_dict: Mapping[str, Tensor], hparams: Mapping[str, Any], path: Path
) -> None:
    """The saved tensors must be exactly those of a model built from the saved hyperparameters."""
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{path}: weights do not match a {type(skeleton).__name__} built from the saved "
            f"schema and hyperparameters {dict(hparams)}: missing {missing[:5]}, unexpected "
            f"{extra[:5]}"
        )
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(
                f"{path}: weights do not match a {type(skeleton).__name__} built from the saved "
                f"schema and hyperparameters {dict(hparams)}: '{key}' has shape "
                f"{tuple(state_dict[key].shape)}, the hyperparameters give {shape}"
            )

"""The one check that a model's outputs are finite, on every forward an explanation runs.

An explanation of a model whose output is NaN or infinite (a NaN bias, weights that diverged,
overflow in low precision) would be a set of finite-looking numbers about nothing, so every
interpreter's :meth:`~ehrlens.interpret.methods.BaseInterpreter.attribute` runs inside
:func:`finite_outputs`: a forward hook on the model, registered for the call and always
removed, looks at each forward's outputs (``logit``/``logits``/``y_prob``, or a plain tensor)
and raises a ``ValueError`` naming the patients whose outputs are not finite. Forwards that
expand the batch (integrated gradients' interpolation steps) are mapped back to the patient.

Example:
    >>> with finite_outputs(model, batch):
    ...     logit = model(**batch)["logit"]        # ValueError if a patient's logit is NaN
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from ..core.modes import model_lock

#: Output keys whose values must be finite (the first present are checked).
OUTPUT_KEYS = ("logit", "logits", "y_prob")


def output_tensors(output: Any) -> dict[str, Tensor]:
    """The model outputs to check: ``{name: [batch, ...]}`` from a dict (or a Hugging Face
    ``ModelOutput``), a tensor, or a tuple whose first item is a tensor.

    Example:
        >>> sorted(output_tensors({"logit": torch.zeros(2, 1), "loss": torch.tensor(0.0)}))
        ['logit']
    """
    if isinstance(output, Tensor):
        return {"output": output}
    if isinstance(output, Mapping):
        return {k: output[k] for k in OUTPUT_KEYS if isinstance(output.get(k), Tensor)}
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return {"output": output[0]}
    return {}


def non_finite_rows(tensor: Tensor) -> list[int]:
    """Indices along the first dimension where any value is NaN or infinite.

    Example:
        >>> non_finite_rows(torch.tensor([[0.0], [float("nan")], [1.0]]))
        [1]
    """
    if tensor.dim() == 0 or tensor.numel() == 0 or tensor.device.type == "meta":
        return []
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return []
    finite = torch.isfinite(tensor.detach().reshape(tensor.shape[0], -1)).all(dim=1)
    if bool(finite.all()):
        return []
    return [int(i) for i in (~finite).nonzero()[:, 0]]


def check_finite_outputs(output: Any, patient_ids: Sequence[Any] | None = None) -> None:
    """Raise a ``ValueError`` naming the patients whose outputs are NaN or infinite.

    Rows map to ``patient_ids`` directly, or modulo their number when the forward stacked
    several copies of the batch (integrated gradients' steps).

    Example:
        >>> check_finite_outputs({"logit": torch.tensor([[0.3], [float("nan")]])}, ["a", "b"])
        Traceback (most recent call last):
        ...
        ValueError: the model's output 'logit' is NaN or infinite for 1 patient(s): ['b'] ...
    """
    for name, tensor in output_tensors(output).items():
        rows = non_finite_rows(tensor)
        if not rows:
            continue
        ids = list(patient_ids) if patient_ids is not None else []
        if ids and tensor.shape[0] % len(ids) == 0:
            named = list(dict.fromkeys(str(ids[r % len(ids)]) for r in rows))
            who = f"{len(named)} patient(s): {named[:10]}{' ...' if len(named) > 10 else ''}"
        else:
            who = f"batch row(s) {rows[:10]}"
        raise ValueError(
            f"the model's output {name!r} is NaN or infinite for {who} (of {tensor.shape[0]} "
            "in the batch); an explanation of it would mean nothing, so none is given. "
            "Check the model's weights (NaN/inf, e.g. a diverged training) and its inputs."
        )


@contextmanager
def finite_outputs(model: Any, batch: Mapping[str, Any]) -> Iterator[None]:
    """While the block runs, every forward of ``model`` has its outputs checked
    (:func:`check_finite_outputs`), naming patients by the forward's own ``patient_id``
    argument or else by ``batch["patient_id"]``. The hook is removed on exit, however the
    block ends, and the model's lock (:func:`~ehrlens.core.modes.model_lock`) is held
    meanwhile. Models that are not ``torch.nn.Module`` (or refuse hooks) are not hooked.

    Example:
        >>> with finite_outputs(model, batch):
        ...     scores = AttentionRollout(model).attribute(**batch)
    """
    ids = batch.get("patient_id")
    fallback = list(ids) if isinstance(ids, (list, tuple)) else None

    def hook(module: Any, args: Any, kwargs: Mapping[str, Any], output: Any) -> None:
        own = kwargs.get("patient_id")
        check_finite_outputs(output, list(own) if isinstance(own, (list, tuple)) else fallback)

    if not isinstance(model, torch.nn.Module):
        yield
        return
    # Held for the block: another thread must not add or remove a hook while this one's
    # forward iterates the model's hooks (explanations of one model take turns anyway).
    with model_lock(model):
        try:
            handle = model.register_forward_hook(hook, with_kwargs=True)
        except (RuntimeError, TypeError):  # scripted modules take no Python hooks
            handle = None
        try:
            yield
        finally:
            if handle is not None:
                handle.remove()


__all__ = ["check_finite_outputs", "finite_outputs", "non_finite_rows", "output_tensors"]

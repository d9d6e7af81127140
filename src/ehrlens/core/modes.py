"""Eval mode with every submodule's own flag restored, and the per-model lock.

Capture state lives on the model, so explanations of one model are serialised by a per-model
lock (:func:`model_lock`, taken by :func:`eval_mode`): two threads explaining the same model
take turns and both get the results they would get alone. Different models run in parallel.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()
#: Shared by objects that cannot be weakly referenced (rare): correct, only less parallel.
_FALLBACK_LOCK = threading.RLock()


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock that serialises explanations (and :func:`eval_mode`) of ``model``.

    One lock per model object, created on first use and dropped with the model. Re-entrant,
    so a method may nest :func:`eval_mode` and a capture in one thread.

    Example:
        >>> with model_lock(model):   # e.g. to change hooks by hand without racing ehrlens
        ...     model.set_attention_hooks(True)
        ...     model.set_attention_hooks(False)
    """
    with _MODEL_LOCKS_GUARD:
        try:
            lock = _MODEL_LOCKS.get(model)
            if lock is None:
                lock = _MODEL_LOCKS[model] = threading.RLock()
        except TypeError:  # not weakly referenceable, or not hashable
            lock = _FALLBACK_LOCK
    return lock


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run the block with ``model`` in eval mode; restore every submodule's own flag after.

    A caller may keep parts of a training model in eval mode, so each module's ``training``
    flag is saved and restored, not just the top module's. The block holds
    :func:`model_lock`, so another thread's ``eval_mode`` on the same model waits: it can
    neither save the eval flags set here nor restore its own in the middle of this block.

    Example:
        >>> with eval_mode(model):
        ...     probabilities = model(**batch)["y_prob"]   # dropout off
        >>> model.training   # as before the block
        False
    """
    with model_lock(model):
        modules = list(model.modules()) if isinstance(model, nn.Module) else []
        modes = [(module, module.training) for module in modules]
        if modules:
            model.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training

"""Progress bars that are a nicety, never a requirement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable, enabled: bool, **kwargs: Any) -> Iterable:
    """``iterable`` wrapped in a tqdm progress bar when ``enabled`` and tqdm is installed.

    Example:
        >>> for batch in progress_bar(loader, enabled=False, desc="epoch 1"):
        ...     print(batch["diagnoses"].shape[0], end=" ")
        8 8 4
    """
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the progress bar is a nicety; everything works without it
        return iterable
    return tqdm(iterable, leave=False, **kwargs)

"""Memory estimates checked before allocating: a configuration that cannot fit is refused
with the estimate in the message, instead of being killed by the operating system.

Example:
    >>> check_fits(16 * 10**9 * 400, "a bootstrap of 10**9 draws over 400 patients")
    Traceback (most recent call last):
    ...
    ehrlens.core.memory.MemoryEstimateError: a bootstrap of 10**9 draws over 400 patients ...
"""

from __future__ import annotations

import os


class MemoryEstimateError(ValueError):
    """A configuration needs more memory than the machine has; nothing was allocated."""


def available_memory() -> int:
    """Bytes of memory this process may still take: ``MemAvailable`` of ``/proc/meminfo``
    on Linux, else the physical memory.

    Example:
        >>> available_memory() > 0
        True
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def _gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB"


def check_fits(needed: float, what: str, available: int | None = None) -> None:
    """Refuse ``what`` when its estimated ``needed`` bytes exceed the available memory.

    Raises:
        MemoryEstimateError: naming ``what``, the estimate and what is available.

    Example:
        >>> check_fits(2**20, "a small table")        # fits: nothing happens
    """
    available = available_memory() if available is None else available
    if needed > available:
        raise MemoryEstimateError(
            f"{what} needs about {_gib(needed)} of memory, more than the {_gib(available)} "
            "available; nothing was allocated. Choose a smaller setting."
        )


__all__ = ["MemoryEstimateError", "available_memory", "check_fits"]

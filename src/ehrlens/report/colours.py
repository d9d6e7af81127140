"""One colour scale per method, shared by every patient of a report, and its legend.

A score of 0 is white. Positive scores shade towards deep red, negative ones towards deep
blue, in proportion to ``|score| / scale``, where ``scale`` is the method's largest ``|score|``
over the reported patients (or a quantile of them, with larger scores drawn at full colour).
A method with a negative score anywhere is *signed*: its legend runs from ``-scale`` through 0
to ``+scale``; otherwise it runs from 0 to ``scale``. Colours of one method can therefore be
compared across patients; colours of different methods cannot (each has its own legend).

Example:
    >>> scale = ColourScale("ig", scale=0.5, signed=True)
    >>> scale.background(0.25), scale.background(-0.5), scale.background(0.0)
    ('#e48e96', '#285ac8', '#ffffff')
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

POSITIVE = (200, 30, 45)  # deep red
NEGATIVE = (40, 90, 200)  # deep blue
WHITE = (255, 255, 255)
#: Above this strength a chip's text turns white to stay readable.
DARK = 0.6


def _mix(base: tuple[int, int, int], strength: float) -> str:
    r, g, b = (round(255 - (255 - c) * strength) for c in base)
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(frozen=True)
class ColourScale:
    """How one method's scores become colours.

    Attributes:
        method: the method's name.
        scale: ``|score|`` drawn at full colour (larger ones too); 0 when every score is 0.
        signed: the method has negative scores (diverging legend, centred on 0).
        clipped: scores above ``scale`` exist (the legend marks its ends with ``≥``).
    """

    method: str
    scale: float
    signed: bool
    clipped: bool = False

    def strength(self, score: float) -> float:
        """``|score| / scale`` capped at 1; 0 for a zero scale or a non-finite score."""
        if self.scale <= 0 or not math.isfinite(score):
            return 0.0
        return min(abs(score) / self.scale, 1.0)

    def background(self, score: float) -> str:
        """The chip colour of ``score`` as ``#rrggbb``."""
        strength = self.strength(score)
        if strength == 0.0:
            return "#ffffff"
        return _mix(POSITIVE if score > 0 else NEGATIVE, strength)

    def text(self, score: float) -> str:
        """Text colour that stays readable on :meth:`background`."""
        return "#ffffff" if self.strength(score) > DARK else "#1d2330"

    def style(self, score: float) -> str:
        """The inline ``style`` of a chip with this score."""
        return f"background:{self.background(score)};color:{self.text(score)}"

    def ticks(self) -> list[str]:
        """Legend labels, low end to high end."""
        end = _number(self.scale)
        if self.signed:
            low, high = f"−{end}", f"+{end}"
            if self.clipped:
                low, high = f"≤ {low}", f"≥ {high}"
            return [low, "0", high]
        return ["0", _number(self.scale / 2), f"≥ {end}" if self.clipped else end]

    def gradient(self) -> str:
        """The legend bar's CSS ``linear-gradient``."""
        red = _mix(POSITIVE, 1.0)
        if self.signed:
            return f"linear-gradient(90deg,{_mix(NEGATIVE, 1.0)},#ffffff,{red})"
        return f"linear-gradient(90deg,#ffffff,{red})"

    def legend_html(self) -> str:
        """One legend entry: the method, its bar and its labels."""
        kind = "signed, centred on 0" if self.signed else "0 to largest"
        ticks = "".join(f"<span>{html.escape(t)}</span>" for t in self.ticks())
        method = html.escape(self.method, quote=True)
        return (
            f"<div class='scale' data-method='{method}' data-scale='{self.scale:.6g}' "
            f"data-signed='{str(self.signed).lower()}'><span class='sname'>{method}</span>"
            f"<span class='bar' style='background:{self.gradient()}'></span>"
            f"<span class='ticks'>{ticks}</span><span class='skind'>{kind}</span></div>"
        )


def _number(value: float) -> str:
    return f"{value:.3g}"


def method_scales(
    frame: Any, methods: Sequence[str], quantile: float = 1.0
) -> dict[str, ColourScale]:
    """``{method: ColourScale}`` from the scores of ``frame`` (the patients being shown).

    Args:
        frame: long-format attributions with ``method`` and ``score`` columns.
        methods: the methods to scale, in order.
        quantile: the quantile of ``|score|`` drawn at full colour (1.0: the largest).

    Raises:
        ValueError: ``quantile`` is not in (0, 1], or a method's scores are not all finite.

    Example:
        >>> signed = frame.assign(method="integrated_gradients", score=frame["score"] - 0.1)
        >>> scales = method_scales(pd.concat([frame, signed]), ["rollout", "integrated_gradients"])
        >>> scales["rollout"].signed, scales["integrated_gradients"].signed
        (False, True)
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    out = {}
    for method in methods:
        scores = np.asarray(frame.loc[frame["method"] == method, "score"], dtype=float)
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores)).sum())
            raise ValueError(
                f"method {method!r}: {bad} score(s) are NaN or infinite; a report cannot shade them"
            )
        magnitude = np.abs(scores)
        largest = float(magnitude.max()) if magnitude.size else 0.0
        scale = largest if quantile == 1.0 else float(np.quantile(magnitude, quantile))
        if scale == 0.0:
            scale = largest  # a quantile at 0 with non-zero scores above it: use the largest
        out[method] = ColourScale(
            method,
            scale=scale,
            signed=bool((scores < 0).any()),
            clipped=bool(largest > scale),
        )
    return out

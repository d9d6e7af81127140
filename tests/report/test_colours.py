"""Colour scales shared across patients (ehrlens.report.colours)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehrlens.report import ColourScale, method_scales


def frame(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = [(m, s) for m, values in scores.items() for s in values]
    return pd.DataFrame(rows, columns=["method", "score"])


def reference_colour(score: float, scale: float) -> tuple[int, int, int]:
    """White at 0, the base colour at |score| >= scale, linear in between (per channel)."""
    t = min(abs(score) / scale, 1.0)
    base = (200, 30, 45) if score > 0 else (40, 90, 200)
    return tuple(round(255 - (255 - c) * t) for c in base)


def rgb(text: str) -> tuple[int, int, int]:
    return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))


def test_scales_are_the_largest_magnitude_per_method():
    scales = method_scales(frame({"a": [0.1, 0.4, 0.2], "b": [-0.3, 0.1], "z": [0.0, 0.0]}), "abz")
    assert scales["a"] == ColourScale("a", 0.4, signed=False, clipped=False)
    assert scales["b"] == ColourScale("b", 0.3, signed=True, clipped=False)
    assert scales["z"] == ColourScale("z", 0.0, signed=False, clipped=False)
    assert scales["z"].background(0.0) == "#ffffff"  # no division by a zero scale
    assert scales["a"].ticks() == ["0", "0.2", "0.4"]
    assert scales["b"].ticks() == ["−0.3", "0", "+0.3"]


def test_a_quantile_scale_clips_and_says_so():
    # |scores| 0..10: the 0.9 quantile (linear) is 9.0
    scales = method_scales(frame({"m": [float(v) for v in range(11)]}), ["m"], quantile=0.9)
    scale = scales["m"]
    assert scale.scale == pytest.approx(9.0) and scale.clipped
    assert scale.ticks() == ["0", "4.5", "≥ 9"]
    assert scale.background(10.0) == scale.background(9.0) == "#c81e2d"
    signed = method_scales(frame({"m": [-10.0, *range(10)]}), ["m"], quantile=0.9)["m"]
    assert signed.ticks() == ["≤ −9", "0", "≥ +9"]
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\], got 0"):
        method_scales(frame({"m": [1.0]}), ["m"], quantile=0)


def test_a_quantile_of_zeros_falls_back_to_the_largest():
    scales = method_scales(frame({"m": [0.0] * 9 + [2.0]}), ["m"], quantile=0.5)
    assert scales["m"].scale == 2.0 and not scales["m"].clipped


@given(
    score=st.floats(-100, 100, allow_nan=False),
    scale=st.floats(1e-3, 100, allow_nan=False),
)
def test_background_matches_the_reference(score, scale):
    colour = ColourScale("m", scale, signed=True).background(score)
    expected = (255, 255, 255) if score == 0 else reference_colour(score, scale)
    assert rgb(colour) == expected
    # symmetric strength: the same distance from white for -s and +s
    shared = ColourScale("m", scale, signed=True)
    assert shared.strength(score) == shared.strength(-score)
    assert 0.0 <= shared.strength(score) <= 1.0


def test_text_turns_white_on_dark_chips_and_non_finite_scores_are_white():
    scale = ColourScale("m", 1.0, signed=False)
    assert scale.text(0.6) == "#1d2330" and scale.text(0.61) == "#ffffff"
    assert scale.background(math.inf) == "#ffffff"

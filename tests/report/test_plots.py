"""PNG plots (ehrlens.report.plots): valid images, and the numbers behind the heatmap."""

from __future__ import annotations

import math
import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.explain import ATTRIBUTION_COLUMNS
from ehrlens.interpret import AttentionRollout, RandomBaseline
from ehrlens.metrics import Evaluator
from ehrlens.models import Transformer
from ehrlens.report.plots import (
    patient_grid,
    plot_faithfulness_curves,
    plot_layer_correlations,
    plot_patient_heatmap,
    plot_sanity_checks,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_info(path) -> tuple[int, int]:
    """Check the whole chunk structure and every CRC of a PNG file; return (width, height)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append(kind)
        offset += 12 + length
    assert offset == len(data)
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_real_png(path, min_bytes=8_000):
    width, height = png_info(path)
    assert width > 300 and height > 200, (width, height)
    assert path.stat().st_size > min_bytes
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert float(pixels[..., :3].std()) > 0.05  # not a blank canvas
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    return width, height


def _frame(rows, visit_dtype="float64"):
    frame = pd.DataFrame(rows, columns=ATTRIBUTION_COLUMNS[: len(rows[0])])  # level optional
    if visit_dtype is not None:
        frame["visit"] = frame["visit"].astype(visit_dtype)
    return frame


ROWS = [
    ("p", "dx", 0, 0, "A", 0.5, "rollout", "m"),
    ("p", "dx", 0, 1, "B", 0.25, "rollout", "m"),
    ("p", "dx", 2, 0, "C", 1.0, "rollout", "m"),
    ("p", "px", 2, 0, "D", 0.125, "rollout", "m"),
    ("p", "demo", None, 0, "0", 0.75, "rollout", "m"),
    ("p", "demo", None, 1, "1", -0.25, "rollout", "m"),
    ("p", "dx", 0, 0, "A", 9.0, "chefer", "m"),  # other method
    ("q", "dx", 1, 0, "A", 7.0, "rollout", "m"),  # other patient
]


def test_patient_grid_sums_scores_per_feature_and_visit():
    grid, features, labels = patient_grid(_frame(ROWS), "p", "rollout")
    assert features == ["dx", "px", "demo"]
    assert labels == ["v0", "v2", "all"]  # only the patient's visits; flat features in "all"
    np.testing.assert_array_equal(
        grid,
        np.array(
            [
                [0.75, 1.0, 0.0],
                [0.0, 0.125, 0.0],
                [0.0, 0.0, 0.5],
            ]
        ),
    )
    grid, features, labels = patient_grid(_frame(ROWS), "q", "rollout")
    assert (features, labels) == (["dx"], ["v1"])
    np.testing.assert_array_equal(grid, [[7.0]])


@pytest.mark.parametrize("visit_dtype", [None, "Int32", "object"])
def test_patient_grid_reads_any_null_visit(visit_dtype):
    """Frames built with pandas directly hold None (object) or pd.NA (nullable ints)."""
    flat_only = [r for r in ROWS if r[2] is None]
    frame = _frame(flat_only, visit_dtype)
    grid, features, labels = patient_grid(frame, "p", "rollout")
    assert (features, labels) == (["demo"], ["all"])
    np.testing.assert_array_equal(grid, [[0.5]])
    grid, _, labels = patient_grid(_frame(ROWS, visit_dtype), "p", "rollout")
    assert labels == ["v0", "v2", "all"]
    assert grid[2, 2] == 0.5 and grid[0, 1] == 1.0


def test_patient_grid_without_rows_is_an_error():
    with pytest.raises(ValueError, match="no attributions for patient 'q' and method 'chefer'"):
        patient_grid(_frame(ROWS), "q", "chefer")


def test_patient_heatmap_png(tmp_path):
    frame = _frame(ROWS)
    one = plot_patient_heatmap(frame, "p", tmp_path / "one.png", methods=["rollout"])
    both = plot_patient_heatmap(frame, "p", tmp_path / "sub" / "both.png")
    assert one == tmp_path / "one.png" and both == tmp_path / "sub" / "both.png"
    _, height_one = assert_real_png(one)
    _, height_both = assert_real_png(both)
    assert height_both > height_one  # one panel per method
    with pytest.raises(ValueError, match="no attributions for patient 'q'"):
        plot_patient_heatmap(frame, "q", tmp_path / "q.png", methods=["chefer"])
    assert not (tmp_path / "q.png").exists()


@pytest.fixture(scope="module")
def evaluations():
    cohort = generate_cohort(24, layout="sequence", seed=2)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=1, dropout=0.0).eval()
    evaluator = Evaluator(model, n_bootstrap=20)
    loader = get_dataloader(dataset, 12)
    return {
        "rollout": evaluator.evaluate(loader, AttentionRollout(model), "rollout"),
        "random": evaluator.evaluate(loader, RandomBaseline(model), "random"),
    }


def test_faithfulness_curves_png(tmp_path, evaluations):
    assert set(evaluations["rollout"].curve) >= {"percent", "comprehensiveness", "sufficiency"}
    path = plot_faithfulness_curves(evaluations, tmp_path / "faithfulness.png")
    assert path == tmp_path / "faithfulness.png"
    assert_real_png(path)
    no_curve = {"broken": SimpleNamespace(curve={})}
    with pytest.raises(ValueError, match="method 'broken': the evaluation result has no curve"):
        plot_faithfulness_curves(no_curve, tmp_path / "broken.png")
    assert not (tmp_path / "broken.png").exists()


def test_layer_correlations_png(tmp_path):
    def rows(means, stds):
        return [
            {"layer": i + 1, "mean": m, "std": s, "n": 10}
            for i, (m, s) in enumerate(zip(means, stds, strict=True))
        ]

    correlations = {
        "chefer": {
            "rollout": rows([0.2, 0.4, 0.6], [0.1, 0.1, 0.05]),
            "flow": rows([0.1, 0.3, 0.5], [0.2, math.nan, 0.1]),  # std nan from one patient
        },
        "input_x_gradient": {
            "rollout": rows([0.0, -0.1, 0.2], [0.1, 0.1, 0.1]),
            "flow": rows([0.05, 0.0, 0.1], [0.1, 0.1, 0.1]),
        },
    }
    path = plot_layer_correlations(correlations, tmp_path / "layers.png")
    width_two, _ = assert_real_png(path)
    one = plot_layer_correlations({"chefer": correlations["chefer"]}, tmp_path / "one.png")
    width_one, _ = assert_real_png(one)
    assert width_two > width_one  # one panel per reference


def test_sanity_plot_is_a_valid_png_and_refuses_mismatched_steps(tmp_path):
    from ehrlens.metrics import MetricSummary, SanityResult
    from ehrlens.metrics.sanity import SanityRow

    def result(method, steps):
        rows = [
            SanityRow(
                step, MetricSummary(0.5 - 0.1 * i, 0.4 - 0.1 * i, 0.6 - 0.1 * i, 8), np.ones(8)
            )
            for i, step in enumerate(steps)
        ]
        return SanityResult("model_parameter_randomisation", method, rows)

    path = plot_sanity_checks(
        [result("a", ["head", "*"]), result("b", ["head", "*"])], tmp_path / "s.png"
    )
    width, height = png_info(path)
    assert width > 100 and height > 100
    with pytest.raises(ValueError, match="steps differ"):
        plot_sanity_checks([result("a", ["head"]), result("b", ["*"])], tmp_path / "t.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_sanity_checks([], tmp_path / "u.png")

"""The ``level`` column of cohort runs: visit-level attention scores are marked as such."""

from __future__ import annotations

import pandas as pd
import torch

from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import ATTRIBUTION_COLUMNS, explain_cohort
from ehrlens.explain.shards import read_attributions, read_run_manifest
from ehrlens.models import CodeTransformer, Transformer


def _dataset():
    cohort = generate_cohort(n_patients=10, layout="nested", seed=6)
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


def _levels(frame: pd.DataFrame) -> dict[str, set[str]]:
    return {method: set(part["level"]) for method, part in frame.groupby("method")}


def test_visit_level_model_marks_attention_rows_as_visit_level():
    dataset = _dataset()
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1)
    frame = explain_cohort(
        model, dataset, ["rollout", "chefer", "visit_split", "random"], batch_size=4
    ).to_frame()
    assert _levels(frame) == {
        "rollout": {"visit"},
        "chefer": {"visit"},
        "visit_split": {"code"},
        "random": {"code"},
    }
    # a visit-level row's score is its visit's: the same on every code of the visit
    rollout = frame[frame["method"] == "rollout"]
    spread = rollout.groupby(["patient_id", "feature", "visit"])["score"].agg(["min", "max"])
    assert (spread["min"] == spread["max"]).all()


def test_code_level_model_marks_attention_rows_as_code_level():
    dataset = _dataset()
    torch.manual_seed(0)
    model = CodeTransformer(dataset, embedding_dim=8, heads=2, num_layers=1)
    frame = explain_cohort(model, dataset, ["rollout", "flow"], batch_size=4).to_frame()
    assert _levels(frame) == {"rollout": {"code"}, "flow": {"code"}}


def test_shards_carry_the_level_and_the_table_layout_enters_the_run(tmp_path):
    dataset = _dataset()
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1)
    explain_cohort(model, dataset, ["rollout"], batch_size=4, out_dir=tmp_path / "a")
    manifest = read_run_manifest(tmp_path / "a")
    # a folder written with another column layout (e.g. without `level`) has another
    # fingerprint, so it is refused as a different run instead of being mixed with this one
    assert manifest["settings"]["columns"] == list(ATTRIBUTION_COLUMNS)
    assert "level" in ATTRIBUTION_COLUMNS
    assert set(read_attributions(tmp_path / "a")["level"]) == {"visit"}

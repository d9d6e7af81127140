"""Explanation as the one result type: of a batch (same columns as the cohort table, identity
and predictions included) and of a run (from its rows or its folder, without the model);
text view outside a notebook; messages in Python's terms; cohort-level code importance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ehrlens.core.files import OutputConflictError
from ehrlens.data import create_sample_dataset, generate_cohort, load_samples, to_events
from ehrlens.explain import explain_cohort, read_attributions
from ehrlens.models import Transformer
from ehrlens.models.directory import save_model_dir
from ehrlens.report import Explanation
from ehrlens.report.cohort import code_importance

KEY = ["patient_id", "method", "feature", "visit", "position"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Patients read from an event table (so rows carry visit_id and event_time)."""
    root = tmp_path_factory.mktemp("explanations")
    cohort = generate_cohort(10, layout="nested", seed=2)
    events = to_events(cohort.samples, cohort.input_schema)
    events.to_parquet(root / "events.parquet")
    samples = load_samples(root / "events.parquet", cohort.input_schema, identity=True)
    labels = {s["patient_id"]: s["label"] for s in cohort.samples}
    for sample in samples:
        sample["label"] = labels[sample["patient_id"]]
    dataset = create_sample_dataset(samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1, dropout=0.0).eval()
    save_model_dir(model, root / "model", {"task": {"mode": "binary", "classes": ["0", "1"]}})
    (root / "model" / "codes.csv").write_text("code,description\nI10,Hypertension\n")
    return root, dataset, model


def _same(frame, expected):
    assert list(frame.columns) == list(expected.columns)
    left = frame.sort_values(KEY, kind="stable").reset_index(drop=True)
    right = expected.sort_values(KEY, kind="stable").reset_index(drop=True)
    exact = [c for c in left.columns if c not in ("score", "predicted_probability",
                                                   "explained_probability", "visit")]  # fmt: skip
    pd.testing.assert_frame_equal(left[exact], right[exact], check_dtype=False)
    for column in ("score", "predicted_probability", "explained_probability"):
        np.testing.assert_allclose(left[column], right[column], rtol=1e-6, atol=1e-9)


def test_a_batch_gives_the_columns_and_rows_of_the_cohort_table(setup):
    _, dataset, model = setup
    items = [dataset[i] for i in range(len(dataset))]
    explanation = Explanation.compute(
        model, dataset.collate(items), ["rollout", "chefer"], items=items
    )
    cohort = explain_cohort(model, dataset, ["rollout", "chefer"]).to_frame()
    frame = explanation.to_frame()
    assert {"level", "visit_id", "event_time", "explained_class"} <= set(frame.columns)
    assert frame["event_time"].notna().all() and frame["level"].notna().all()
    _same(frame, cohort)


def test_a_run_folder_loads_without_the_model(setup, tmp_path, monkeypatch, capsys):
    root, dataset, model = setup
    explain_cohort(model, dataset, ["rollout"], out_dir=tmp_path / "attr", target_class_idx=0)
    monkeypatch.setattr(Transformer, "forward", lambda *a, **k: pytest.fail("the model ran"))
    loaded = Explanation.load(tmp_path / "attr", model_dir=root / "model")
    rows = read_attributions(tmp_path / "attr")
    pd.testing.assert_frame_equal(loaded.to_frame(), rows)
    assert loaded.methods == ["rollout"] and loaded.patient_ids == dataset.patient_ids
    assert loaded.target == 0 and loaded.descriptions == {"I10": "Hypertension"}
    first = rows.drop_duplicates("patient_id").set_index("patient_id")
    for pid, prediction in loaded.predictions.items():
        assert prediction.probability == first.loc[pid, "explained_probability"]
        assert prediction.class_index == 0  # explained class 0 of a binary model
    loaded.show(1, top_k=3)  # no IPython shell here: a text table
    text = capsys.readouterr().out
    pid = dataset.patient_ids[1]
    assert text.startswith(f"patient {pid}\n")
    patient = rows[rows["patient_id"] == pid]
    top = patient.nlargest(3, "score")
    assert f"rollout: top 3 of {len(patient)}" in text
    for code, score in zip(top["code"], top["score"], strict=True):
        assert f"{code}" in text and f"{score:.4f}" in text
    assert "<" not in text  # no HTML


def test_a_saved_table_loads_back_and_a_second_save_speaks_python(setup, tmp_path):
    _, dataset, model = setup
    batch = dataset.collate([dataset[i] for i in range(4)])
    explanation = Explanation.compute(model, batch, ["rollout"])
    path = explanation.save(tmp_path / "e.parquet")
    back = Explanation.load(path)
    pd.testing.assert_frame_equal(back.to_frame(), explanation.to_frame())
    with pytest.raises(OutputConflictError) as error:
        explanation.save(path)
    assert "overwrite=True" in str(error.value) and "--overwrite" not in str(error.value)
    other = tmp_path / "e.json"
    other.write_text("{}")
    with pytest.raises(ValueError, match=r"load reads an explain folder, \.parquet or \.csv"):
        Explanation.load(other)


def test_aggregate_averages_over_every_patient_with_an_interval():
    rows = pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "b", "c"],
            "method": ["m"] * 5,
            "feature": ["dx"] * 5,
            "code": ["x", "x", "y", "x", "y"],
            "score": [1.0, 2.0, 4.0, 3.0, 8.0],
            "level": ["code"] * 5,
        }
    )
    table = code_importance(rows, n_boot=200, seed=1)
    by_code = table.set_index("code")
    # x: a has 1+2=3, b 3, c 0 -> mean 2; y: a 4, b 0, c 8 -> mean 4
    assert by_code.loc["x", "mean"] == pytest.approx(2.0)
    assert by_code.loc["y", "mean"] == pytest.approx(4.0)
    assert list(table["code"]) == ["y", "x"]  # by decreasing mean
    assert by_code.loc["x", "patients"] == 2 and by_code.loc["y", "patients"] == 2
    assert (table["low"] <= table["mean"]).all() and (table["mean"] <= table["high"]).all()
    assert by_code.loc["y", "low"] >= 0 and by_code.loc["y", "high"] <= 8.0
    same = code_importance(rows.assign(score=1.0), n_boot=50)  # one patient's codes a, b, c
    visit = code_importance(rows.assign(level="visit"))
    assert visit.empty  # a visit's score repeated on its codes is not a code's score
    assert np.isfinite(same["low"]).all()
    no_interval = code_importance(rows, n_boot=0)
    assert no_interval["low"].isna().all()
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        code_importance(rows, confidence=1.0)

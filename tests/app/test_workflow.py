"""The steps behind the CLI as functions (ehrlens.app.workflow)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from ehrlens.app.workflow import (
    read_risk,
    read_schema_file,
    select_split,
    train_model,
    train_on_cohort,
    write_synthetic_cohort,
)
from ehrlens.core.jsonl import read_jsonl
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.data.sources import load_samples
from ehrlens.explain import model_fingerprint
from ehrlens.models import StageAttentionNet, Transformer

TINY = {"embedding_dim": 16, "heads": 2, "num_layers": 1}


def _plain(samples):
    return json.loads(json.dumps(samples))


# ----------------------------------------------------------------------------- schema files
def test_read_schema_file(tmp_path):
    path = tmp_path / "schema.json"
    schema = {
        "input_schema": {"dx": "nested_sequence", "labs": "timeseries"},
        "output_schema": {"death": "binary"},
        "columns": {"labs": ["na", "k"]},
    }
    path.write_text(json.dumps(schema))
    assert read_schema_file(path) == schema


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected 'input_schema' as an object of schema strings"),
        ('{"input_schema": {"dx": "sequence"}}', "expected 'output_schema' as an object"),
        ('{"input_schema": {"dx": 3}, "output_schema": {"y": "binary"}}', "'input_schema'"),
        ('{"input_schema": ["dx"], "output_schema": {"y": "binary"}}', "'input_schema'"),
        (
            '{"input_schema": {"dx": "sequence"}, "output_schema": {"a": "binary", "b": "binary"}}',
            "a model predicts one label; output_schema has 2",
        ),
    ],
)
def test_bad_schema_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "my_schema.json"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        read_schema_file(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


# ----------------------------------------------------------------------------- synthetic files
@pytest.mark.parametrize("layout", ["nested", "stagenet"])
def test_write_synthetic_cohort_writes_every_format_with_the_same_patients(tmp_path, layout):
    files = write_synthetic_cohort(tmp_path / "data", n_patients=40, layout=layout, seed=3)
    names = ["samples", "events", "labels", "schema", "codes", "ground_truth", "risk"]
    assert list(files) == names
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(
        [
            "samples.jsonl",
            "events.parquet",
            "labels.csv",
            "schema.json",
            "codes.csv",
            "ground_truth.json",
            "risk.csv",
        ]
    )
    cohort = generate_cohort(40, layout=layout, seed=3)
    assert read_jsonl(files["samples"]) == _plain(cohort.samples)
    schema = read_schema_file(files["schema"])
    assert schema == {"input_schema": cohort.input_schema, "output_schema": {"label": "binary"}}
    from_table = load_samples(files["events"], schema["input_schema"], labels=files["labels"])
    assert from_table == cohort.samples
    with open(files["labels"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["patient_id", "label"]
    assert rows[1:] == [[s["patient_id"], str(s["label"])] for s in cohort.samples]
    assert json.loads(files["ground_truth"].read_text()) == cohort.ground_truth
    assert read_risk(files["risk"]) == cohort.risk  # written exactly (repr of each float)

    with open(files["codes"], newline="") as f:
        descriptions = {row["code"]: row["description"] for row in csv.DictReader(f)}
    used = set()
    for sample in cohort.samples:
        for feature in ("diagnoses", "procedures", "drugs"):
            visits = sample[feature][1] if layout == "stagenet" else sample[feature]
            used.update(code for visit in visits for code in visit)
    planted = {c for _, c in cohort.signal_codes} | {c for _, c in cohort.distractors.values()}
    assert set(descriptions) == used | planted  # every code seen, and every planted one
    for (_, code), weight in cohort.signal_weights.items():
        assert f"planted risk factor (weight {weight:+.2f})" in descriptions[code]
    for (_, signal), (_, distractor) in cohort.distractors.items():
        assert descriptions[distractor].endswith(f"distractor correlated with {signal}")
    kinds = {"diagnoses": "diagnosis", "procedures": "procedure", "drugs": "drug"}
    some = cohort.samples[0]
    first_dx = (some["diagnoses"][1] if layout == "stagenet" else some["diagnoses"])[0][0]
    assert descriptions[first_dx].startswith(f"synthetic {kinds['diagnoses']}")


def test_synthetic_seed_decides_the_cohort(tmp_path):
    a = write_synthetic_cohort(tmp_path / "a", n_patients=15, seed=1)
    b = write_synthetic_cohort(tmp_path / "b", n_patients=15, seed=1)
    c = write_synthetic_cohort(tmp_path / "c", n_patients=15, seed=2)
    for name in ("samples", "labels", "codes", "ground_truth", "schema"):
        assert a[name].read_bytes() == b[name].read_bytes(), name
    assert a["samples"].read_bytes() != c["samples"].read_bytes()


# ----------------------------------------------------------------------------- splits, training
def test_select_split_is_a_patient_disjoint_70_15_15_split():
    cohort = generate_cohort(40, layout="sequence", seed=0)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    assert select_split(dataset, "all", 0) is dataset
    parts = {s: set(select_split(dataset, s, 7).patient_ids) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [28, 6, 6]
    assert parts["train"] | parts["val"] | parts["test"] == set(dataset.patient_ids)
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"])
    assert not parts["val"] & parts["test"]
    assert set(select_split(dataset, "test", 7).patient_ids) == parts["test"]  # same seed
    assert set(select_split(dataset, "test", 8).patient_ids) != parts["test"]
    with pytest.raises(ValueError, match=r"split must be one of \('all', 'train', 'val', 'test'\)"):
        select_split(dataset, "holdout", 0)


@pytest.fixture(scope="module")
def trained():
    cohort = generate_cohort(60, layout="nested", seed=0)
    schema = {"input_schema": cohort.input_schema, "output_schema": cohort.output_schema}
    model, card = train_model(cohort.samples, schema, hparams=TINY, epochs=2, seed=4)
    return cohort, schema, model, card


def test_train_model_card(trained):
    _, _, model, card = trained
    assert isinstance(model, Transformer) and model.training is False
    assert model.hparams["embedding_dim"] == 16
    data = card["data"]
    assert data["n_patients"] == 60
    assert (data["n_train"], data["n_val"], data["n_test"]) == (42, 9, 9)
    split = dict(data["split"])
    recorded = split.pop("patient_ids")
    assert split == {"fractions": [0.7, 0.15, 0.15], "seed": 4}
    assert [len(recorded[p]) for p in ("train", "val", "test")] == [42, 9, 9]
    training = card["training"]
    assert {k: training[k] for k in ("model", "epochs", "lr", "batch_size", "seed")} == {
        "model": "transformer",
        "epochs": 2,
        "lr": 2e-3,
        "batch_size": 64,
        "seed": 4,
    }
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    assert training["monitor"] == "roc_auc" and training["seconds"] >= 0
    assert set(card["test_metrics"]) >= {"roc_auc", "loss"}
    for value in card["test_metrics"].values():
        assert value is None or math.isfinite(value)
    json.dumps(card, allow_nan=False)  # the card is strict JSON


def test_train_model_split_matches_select_split(trained):
    cohort, schema, _, card = trained
    dataset = create_sample_dataset(cohort.samples, schema["input_schema"], schema["output_schema"])
    seed = card["data"]["split"]["seed"]
    assert len(select_split(dataset, "test", seed)) == card["data"]["n_test"]
    assert len(select_split(dataset, "train", seed)) == card["data"]["n_train"]
    # the card lists each part's patients: those of the seeded split, in dataset order
    recorded = card["data"]["split"]["patient_ids"]
    for part in ("train", "val", "test"):
        assert recorded[part] == select_split(dataset, part, seed).patient_ids, part


def test_train_model_is_seeded(trained):
    cohort, schema, model, _ = trained
    again, _ = train_model(cohort.samples, schema, hparams=TINY, epochs=2, seed=4)
    assert model_fingerprint(again) == model_fingerprint(model)
    other, _ = train_model(cohort.samples, schema, hparams=TINY, epochs=2, seed=5)
    assert model_fingerprint(other) != model_fingerprint(model)


def test_train_model_stagenet_and_errors():
    cohort = generate_cohort(30, layout="stagenet", seed=0)
    schema = {"input_schema": cohort.input_schema, "output_schema": cohort.output_schema}
    hparams = {"embedding_dim": 16, "heads": 2, "chunk_size": 8, "levels": 2}
    model, card = train_model(cohort.samples, schema, model="stagenet", hparams=hparams, epochs=1)
    assert isinstance(model, StageAttentionNet) and card["training"]["model"] == "stagenet"
    with pytest.raises(ValueError, match="unknown model 'gru'; choose from transformer, stagenet"):
        train_model(cohort.samples, schema, model="gru")
    with pytest.raises(ValueError, match="need at least 10 patients to split and train, got 9"):
        train_model(cohort.samples[:9], schema, epochs=1)


def test_train_on_cohort_returns_disjoint_splits_scores_and_an_eval_model():
    run = train_on_cohort(
        Transformer, {"embedding_dim": 16, "heads": 2, "num_layers": 1}, n_patients=200, epochs=1
    )
    ids = [set(split.patient_ids) for split in (run.train, run.val, run.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(i) for i in ids) == 200
    assert {"roc_auc", "pr_auc", "loss"} <= set(run.test_metrics)
    assert 0.5 < run.oracle_roc_auc <= 1.0 and len(run.history) == 1
    assert not run.model.training and run.train_seconds > 0


def test_best_achievable_auroc_is_the_auroc_of_the_noise_free_risk(tmp_path):
    from types import SimpleNamespace

    from ehrlens.app.workflow import best_achievable_auroc, read_risk
    from ehrlens.data.processors import BinaryLabelProcessor

    proc = BinaryLabelProcessor(positive_class="high")
    proc.fit(["low", "high"], key="y")
    model = SimpleNamespace(schema=SimpleNamespace(output_processors={"y": proc}))
    samples = [
        {"patient_id": pid, "y": y}
        for pid, y in [("a", "low"), ("b", "high"), ("c", "low"), ("d", "high"), ("e", "high")]
    ]
    (tmp_path / "risk.csv").write_text("patient_id,risk\na,0.1\nb,0.8\nc,0.6\nd,0.4\ne,0.0\n")
    risk = read_risk(tmp_path / "risk.csv")
    # b (0.8) beats a and c; d (0.4) beats a only: 3 of 4 pairs; e is not a test patient
    assert best_achievable_auroc(model, samples, ["a", "b", "c", "d"], risk) == 0.75
    with pytest.raises(ValueError, match=r"no risk for 1 test patient\(s\), e.g. \['x'\]"):
        best_achievable_auroc(model, samples, ["a", "x"], risk)
    (tmp_path / "bad.csv").write_text("patient_id,risk\na,1.5\n")
    with pytest.raises(ValueError, match=r"bad\.csv: row 1: risk must be a number in"):
        read_risk(tmp_path / "bad.csv")


def test_train_model_keeps_the_measurement_names_of_the_schema(tmp_path):
    samples = [
        {
            "patient_id": f"p{i}",
            "dx": [f"c{i % 3}"],
            "labs": ([0.0, 1.0], [[0.5 * i, 1.0], [0.25, float(i % 2)]]),
            "y": i % 2,
        }
        for i in range(12)
    ]
    schema = {
        "input_schema": {"dx": "sequence", "labs": "timeseries"},
        "output_schema": {"y": "binary"},
        "columns": {"labs": ["LOINC//2160-0", "LOINC//2345-7"]},
    }
    model, _ = train_model(samples, schema, hparams={"embedding_dim": 8, "heads": 2}, epochs=1)
    labs = model.schema.input_processors["labs"]
    assert labs.columns == ["LOINC//2160-0", "LOINC//2345-7"]
    values = labs.process(samples[3]["labs"], "labs")[1]
    codes = [code for _, _, code, _ in labs.long_units(values)]
    assert codes == ["LOINC//2160-0", "LOINC//2345-7"] * 2
    restored = type(labs)()
    restored.load_state_dict(labs.state_dict())  # saved with the model
    assert restored.columns == labs.columns
    bad = {**schema, "columns": {"labs": ["only one"]}}
    with pytest.raises(ValueError, match="feature 'labs': 1 measurement names for 2 values"):
        train_model(samples, bad, hparams={"embedding_dim": 8, "heads": 2}, epochs=1)

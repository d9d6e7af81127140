"""Model directories, MEDS splits and dates that silently gave wrong results or unclear errors.

Issue "Eighteen more ways the promises break", items 5-7 and 9-12: ``--split new`` on MEDS
took training subjects whose prediction times had moved; ``--model-sha256`` did not cover
``card.json``; a partial ``subject_splits.parquet`` dropped samples silently and unknown split
names were accepted; year 0 passed ``train`` and broke ``explain``; a card of the wrong shape
gave an AttributeError; MEDS codes ``patient_id//N`` and ``//X`` crashed; a numeric_value of
3.4e38 was blamed on the learning rate.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from datetime import datetime, timedelta

import pytest
from _cli_kit import invoke
from _robustness_kit import make_dataset, make_model

from _meds_kit import t, write_labels, write_rows, write_splits
from ehrlens.app.splits import select_recorded_split
from ehrlens.data import create_sample_dataset
from ehrlens.data.meds import MedsWarning, from_meds
from ehrlens.models.directory import CARD, load_model_dir, save_model_dir


# ------------------------------------------------------------------------------- item 5
def _meds_like(subjects, hours: int = 0):
    """One sample per subject (two for even subjects), MEDS-style ids and identity."""
    rng = random.Random(0)
    samples = []
    for subject in subjects:
        for k in range(1 + (subject % 2 == 0)):
            when = datetime(2020, 1, 1 + k) + timedelta(hours=hours)
            samples.append(
                {
                    "patient_id": f"{subject}@{when.isoformat()}",
                    "subject_id": subject,
                    "prediction_time": when,
                    "codes": [f"C{rng.randint(0, 4)}"],
                    "y": subject % 2,
                }
            )
    return samples


def test_item_5_new_on_meds_means_new_subjects_whatever_the_time():
    """Every prediction time moved by an hour: only subjects the card never saw are new (140
    of 200 "new" samples were training subjects)."""
    schema, labels = {"codes": "sequence"}, {"y": "binary"}
    trained = _meds_like(range(10))
    card = {
        "data": {
            "split": {
                "patient_ids": {
                    "train": [s["patient_id"] for s in trained[:8]],
                    "val": [s["patient_id"] for s in trained[8:11]],
                    "test": [s["patient_id"] for s in trained[11:]],
                }
            }
        }
    }
    shifted = create_sample_dataset(_meds_like(range(14), hours=1), schema, labels)
    new = select_recorded_split(shifted, "new", card)
    assert sorted({item["identity"]["subject_id"] for item in new.items}) == [10, 11, 12, 13]
    plain = create_sample_dataset(
        [{k: v for k, v in s.items() if k not in ("subject_id", "prediction_time")} for s in
         _meds_like(range(12), hours=1)],
        schema, labels,
    )  # fmt: skip
    # without subject identity, ids are whole patients: every shifted id is new
    assert len(select_recorded_split(plain, "new", card)) == len(plain)


# ------------------------------------------------------------------------------- item 6
@pytest.fixture
def model_dir(tmp_path):
    dataset = make_dataset()
    card = {
        "data": {"split": {"patient_ids": {"train": ["p0", "p1"], "val": ["p2"], "test": ["p3"]}}},
        "task": {"label": "y", "mode": "binary", "classes": ["0", "1"]},
    }
    return save_model_dir(make_model("Transformer", dataset), tmp_path / "model", card)


def test_item_6_the_trusted_checksum_covers_the_card(model_dir):
    """The checksum taken before an edit of card.json (train and test ids swapped, classes
    swapped) refuses the edited directory; model.pt's own SHA-256 is no longer enough."""
    from ehrlens.core.files import file_sha256
    from ehrlens.models.directory import model_dir_sha256

    trusted = model_dir_sha256(model_dir)
    load_model_dir(model_dir, expected_sha256=trusted)
    card = json.loads((model_dir / CARD).read_text())
    ids = card["data"]["split"]["patient_ids"]
    ids["train"], ids["test"] = ids["test"], ids["train"]
    card["task"]["classes"] = ["1", "0"]
    (model_dir / CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"model directory's SHA-256 \(card.json, model.pt\)"):
        load_model_dir(model_dir, expected_sha256=trusted)
    weights_only = file_sha256(model_dir / "model.pt")
    with pytest.raises(ValueError, match=r"is the SHA-256 of model\.pt alone"):
        load_model_dir(model_dir, expected_sha256=weights_only)


@pytest.mark.slow
def test_item_6_train_prints_the_checksum_and_explain_checks_it(cli_cohort, tmp_path):
    from ehrlens.models.directory import model_dir_sha256

    model = tmp_path / "model"
    shutil.copytree(cli_cohort / "model", model)
    trusted = model_dir_sha256(model)
    data = cli_cohort / "data" / "samples.jsonl"
    card = json.loads((model / CARD).read_text())
    ids = card["data"]["split"]["patient_ids"]
    ids["train"], ids["test"] = ids["test"], ids["train"]
    (model / CARD).write_text(json.dumps(card))
    result = invoke(
        "explain", "--model", model, "--data", data, "--split", "test", "-m", "rollout",
        "--out", tmp_path / "attr", "--model-sha256", trusted, "-q", expect=1,
    )  # fmt: skip
    assert "one of its files changed" in result.stderr
    assert not (tmp_path / "attr").exists()


# ------------------------------------------------------------------------------- item 7
def _meds_root(tmp_path, n: int = 8, code=lambda s: "ICD//A", value=None, when=None):
    """A MEDS root of ``n`` subjects, one event and one label each."""
    root = tmp_path / "meds"
    rows = [
        (s, when or t("2020-01-01T00:00"), code(s), value if s == n - 1 else None) for s in range(n)
    ]
    write_rows(root / "data" / "0.parquet", rows)
    labels = write_labels(
        tmp_path / "labels.parquet", [(s, t("2020-02-01T00:00"), s % 2 == 0) for s in range(n)]
    )
    return root, labels


def test_item_7_an_unknown_split_name_is_an_error(tmp_path):
    root, labels = _meds_root(tmp_path)
    write_splits(root, {0: "train", 1: "validation", 2: "held_out"})
    with pytest.raises(ValueError, match=r"unknown split name\(s\) \['validation'\] \(row 1"):
        from_meds(root, labels)


def test_item_7_subjects_the_splits_leave_out_are_an_error_or_counted(tmp_path):
    """Half the subjects split: ``train`` refuses by default, naming the count; with
    ``--unsplit-subjects leave-out`` it warns with the count."""
    from ehrlens.app.meds import training_parts

    root, labels = _meds_root(tmp_path)
    write_splits(root, {0: "train", 1: "train", 2: "tuning", 3: "held_out"})
    data = from_meds(root, labels)
    with pytest.raises(ValueError, match=r"names no split for 4 labelled subject\(s\) \(4 of 8"):
        training_parts(data, seed=0)
    with pytest.warns(MedsWarning, match=r"4 labelled subject\(s\).*left out of training"):
        parts = training_parts(data, seed=0, unsplit="leave-out")
    assert sorted(parts.values()) == ["test", "train", "train", "val"]


@pytest.mark.slow
def test_item_7_the_command_line_refuses_partial_splits(tmp_path):
    root, labels = _meds_root(tmp_path, n=12)
    write_splits(root, {s: "train" for s in range(6)})
    result = invoke(
        "train", "--data", f"meds:{root}", "--labels", labels, "--out", tmp_path / "model",
        "--epochs", 1, "-q", expect=1,
    )  # fmt: skip
    assert "names no split for 6 labelled subject(s)" in result.stderr
    assert not (tmp_path / "model" / "model.pt").exists()


# ------------------------------------------------------------------------------- item 9
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_item_9_year_0_in_an_event_table_is_a_bad_row(tmp_path, suffix):
    """``0000-01-01`` is refused when the table is read, naming its row (it passed ``train``,
    and ``explain`` failed with "year 0 is out of range" naming nothing)."""
    import pandas as pd

    from ehrlens.data.events import from_events

    frame = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b"],
            "time": ["2020-01-01", "0000-01-01", "2020-01-02"],
            "feature": ["codes", "codes", "codes"],
            "code": ["X", "Y", "Z"],
        }
    )
    path = tmp_path / f"events.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    with pytest.raises(ValueError, match=r"outside years 1-9999.*: 1 \(rows 2\)"):
        from_events(path, {"codes": "sequence"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = from_events(path, {"codes": "sequence"}, on_bad_rows="skip")
    assert {s["patient_id"]: s["codes"] for s in samples} == {"a": ["X"], "b": ["Z"]}


def test_item_9_year_0_in_meds_is_refused_naming_the_row(tmp_path):
    root, labels = _meds_root(tmp_path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(root / "data" / "0.parquet")
    times = table.column("time").cast(pa.int64()).to_pylist()
    times[3] = -62_167_219_200_000_000  # 0000-01-01 in microseconds since 1970
    table = table.set_column(1, "time", pa.array(times, pa.int64()).cast(pa.timestamp("us")))
    pq.write_table(table, root / "data" / "0.parquet")
    with pytest.raises(ValueError, match=r"0\.parquet: row 3 \(subject 3\): time is before year"):
        from_meds(root, labels)


# ------------------------------------------------------------------------------ item 10
@pytest.mark.parametrize(
    ("card", "message"),
    [
        ([], "a model card must be a JSON object, got an array"),
        ({"data": None}, "'data' must be an object, got null"),
        ({"task": "binary"}, "'task' must be an object, got a string"),
        ({"data": {"split": []}}, "'data.split' must be an object, got an array"),
        ({"task": {"classes": {"a": 1}}}, "'task.classes' must be a list of class names"),
    ],
)
def test_item_10_a_card_of_the_wrong_shape_says_what_is_wrong(model_dir, card, message):
    original = json.loads((model_dir / CARD).read_text())
    if isinstance(card, dict):
        card = {**original, **card}
    (model_dir / CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"card\.json: .*" + message.replace("(", r"\(")):
        load_model_dir(model_dir)


# ------------------------------------------------------------------------------ item 11
@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("patient_id//N", "its prefix 'patient_id' is a reserved sample key"),
        ("//X", "its vocabulary prefix (before '//') is empty"),
    ],
)
def test_item_11_meds_codes_that_cannot_name_a_feature(tmp_path, code, why):
    root, labels = _meds_root(tmp_path, code=lambda s: code if s == 5 else "ICD//A")
    with pytest.raises(
        ValueError, match=r"row 5 \(subject 5\), code " + repr(code).replace("/", "/")
    ) as error:
        from_meds(root, labels)
    assert why in str(error.value)


# ------------------------------------------------------------------------------ item 12
def test_item_12_a_huge_numeric_value_is_named(tmp_path):
    root, labels = _meds_root(tmp_path, code=lambda s: "LAB//HR", value=3.4e38)
    with pytest.raises(
        ValueError, match=r"row 7 \(subject 7\), code 'LAB//HR': numeric_value 3\.4e\+38"
    ):
        from_meds(root, labels, numeric=["LAB"])

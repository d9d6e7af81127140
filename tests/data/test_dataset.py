"""create_sample_dataset, input validation, fitted-schema reuse, loaders, splits, devices."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ehrlens.data import (
    UNK_ID,
    FittedSchema,
    SampleDataset,
    create_sample_dataset,
    get_dataloader,
    move_to_device,
    split_by_patient,
)

INPUT_SCHEMA = {
    "codes": "sequence",
    "visits": "nested_sequence",
    "labs": "timeseries",
    "stages": "stagenet",
    "demo": "tensor",
}
OUTPUT_SCHEMA = {"label": "binary"}


def _samples() -> list[dict]:
    return [
        {
            "patient_id": "p0",
            "visit_id": "v0",
            "codes": ["b", "a", "c"],
            "visits": [["a"], ["b", "c"]],
            "labs": ([0.0, 1.0, 2.0], [[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]),
            "stages": ([0.0, 5.0], ["a", "b"]),
            "demo": [0.6, 1.0],
            "label": 1,
            "ignored": "not in any schema",
        },
        {
            "patient_id": "p1",
            "codes": ["a"],
            "visits": [["c"]],
            "labs": ([3.0], [[5.0, 6.0]]),
            "stages": ([1.0], ["c"]),
            "demo": [0.3, 0.0],
            "label": 0,
        },
        {
            "patient_id": 2,
            "codes": [],
            "visits": [],
            "labs": ([], []),
            "stages": ([], []),
            "demo": [0.9, 1.0],
            "label": 0,
        },
    ]


@pytest.fixture
def dataset() -> SampleDataset:
    return create_sample_dataset(_samples(), INPUT_SCHEMA, OUTPUT_SCHEMA, dataset_name="toy")


def test_dataset_views(dataset):
    assert len(dataset) == 3
    assert dataset.dataset_name == "toy"
    assert dataset.input_schema == INPUT_SCHEMA
    assert dataset.output_schema == OUTPUT_SCHEMA
    assert dataset.feature_keys == list(INPUT_SCHEMA)
    assert dataset.label_keys == ["label"]
    assert dataset.patient_ids == ["p0", "p1", "2"]  # patient ids become strings
    assert dataset.has_labels
    assert "ignored" not in dataset[0]
    assert dataset[0]["visit_id"] == "v0"
    assert dataset[1]["visit_id"] is None


def test_collate_batch_structure(dataset):
    batch = dataset.collate([dataset[i] for i in range(3)])
    assert batch["patient_id"] == ["p0", "p1", "2"]
    assert batch["visit_id"] == ["v0", None, None]
    assert batch["codes"].shape == (3, 3)
    assert batch["codes"].tolist() == [[3, 2, 4], [2, 0, 0], [0, 0, 0]]
    assert batch["visits"].shape == (3, 2, 2)
    assert batch["labs"].shape == (3, 3, 2)
    assert batch["stages"].shape == (3, 2)
    assert batch["demo"].shape == (3, 2)
    assert batch["label"].shape == (3, 1)
    assert batch["label"].flatten().tolist() == [1.0, 0.0, 0.0]
    # Masks only where values cannot show padding; times for timeseries and stagenet.
    assert set(batch["masks"]) == {"labs"}
    assert batch["masks"]["labs"].tolist() == [
        [True, True, True],
        [True, False, False],
        [False, False, False],
    ]
    assert set(batch["times"]) == {"labs", "stages"}
    assert batch["times"]["stages"].tolist() == [[0.0, 5.0], [1.0, 0.0], [0.0, 0.0]]


def test_collate_empty_list_raises(dataset):
    with pytest.raises(ValueError, match="empty"):
        dataset.collate([])


# ----------------------------------------------------------------------------- validation


def _with(index: int, **changes) -> list[dict]:
    samples = _samples()
    samples[index].update(changes)
    return samples


def _without(index: int, key: str) -> list[dict]:
    samples = _samples()
    del samples[index][key]
    return samples


BAD_INPUTS = {
    "missing_feature_key": (_without(1, "visits"), ValueError, r"sample 1\b.*'visits'"),
    "missing_label_key": (_without(2, "label"), ValueError, r"sample 2\b.*'label'"),
    "string_instead_of_codes": (
        _with(1, codes="I10"),
        TypeError,
        r"sample 1, feature 'codes'.*list of codes.*str",
    ),
    "string_instead_of_visit": (
        _with(2, visits=["I10"]),
        TypeError,
        r"sample 2, feature 'visits'.*visit 0",
    ),
    "non_code_in_list": (
        _with(0, codes=["a", 1.5]),
        TypeError,
        r"sample 0, feature 'codes'.*position 1",
    ),
    "ragged_tensor": (_with(2, demo=[0.1, 0.2, 0.3]), ValueError, r"feature 'demo'.*sample 2"),
    "nan_in_tensor": (_with(1, demo=[math.nan, 0.0]), ValueError, r"sample 1, feature 'demo'"),
    "nan_in_timeseries": (
        _with(1, labs=([3.0], [[math.nan, 6.0]])),
        ValueError,
        r"sample 1, feature 'labs'.*finite",
    ),
    "ragged_timeseries_rows": (
        _with(0, labs=([0.0, 1.0], [[1.0, 2.0], [1.0]])),
        ValueError,
        r"sample 0, feature 'labs'",
    ),
    "timeseries_width_disagrees": (
        _with(1, labs=([3.0], [[5.0, 6.0, 7.0]])),
        ValueError,
        r"feature 'labs'.*sample 1",
    ),
    "decreasing_timeseries_times": (
        _with(0, labs=([0.0, 2.0, 1.0], [[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])),
        ValueError,
        r"sample 0, feature 'labs'.*non-decreasing",
    ),
    "decreasing_stagenet_times": (
        _with(1, stages=([4.0, 3.0], ["a", "b"])),
        ValueError,
        r"sample 1, feature 'stages'.*non-decreasing",
    ),
    "times_length_mismatch": (
        _with(1, stages=([4.0], ["a", "b"])),
        ValueError,
        r"sample 1, feature 'stages'",
    ),
    "nan_time": (
        _with(0, stages=([0.0, math.nan], ["a", "b"])),
        ValueError,
        r"sample 0, feature 'stages'",
    ),
    "binary_label_three_values": (
        _with(2, label=2),
        ValueError,
        # Either order: the sample that brings the third value, and the label key.
        r"(?s)(?=.*sample 2\b)(?=.*'label')",
    ),
    "label_is_a_list": (_with(1, label=[0, 1]), TypeError, r"sample 1, label 'label'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_sample_and_key(case):
    samples, error, pattern = BAD_INPUTS[case]
    with pytest.raises(error, match=pattern):
        create_sample_dataset(samples, INPUT_SCHEMA, OUTPUT_SCHEMA)


def test_bad_input_at_conversion_with_fitted_schema_names_sample_and_key(dataset):
    new = _samples()
    new[1]["codes"] = "I10"
    with pytest.raises(TypeError, match=r"sample 1, feature 'codes'"):
        create_sample_dataset(new, schema=dataset.schema)
    new = _samples()
    new[2]["label"] = 3
    with pytest.raises(ValueError, match=r"sample 2, label 'label'"):
        create_sample_dataset(new, schema=dataset.schema)


def test_unknown_schema_string_names_the_key():
    with pytest.raises(ValueError, match=r"'visits'.*'nested'"):
        create_sample_dataset(_samples(), {**INPUT_SCHEMA, "visits": "nested"}, OUTPUT_SCHEMA)
    with pytest.raises(ValueError, match=r"'label'.*'bin'"):
        create_sample_dataset(_samples(), INPUT_SCHEMA, {"label": "bin"})


def test_empty_dataset_raises():
    with pytest.raises(ValueError, match="empty"):
        create_sample_dataset([], INPUT_SCHEMA, OUTPUT_SCHEMA)


def test_samples_must_be_a_list_of_dicts():
    with pytest.raises(TypeError, match="list of dicts"):
        create_sample_dataset({"patient_id": "p"}, INPUT_SCHEMA, OUTPUT_SCHEMA)
    with pytest.raises(TypeError, match=r"sample 1\b"):
        create_sample_dataset([_samples()[0], "p1"], INPUT_SCHEMA, OUTPUT_SCHEMA)


def test_schema_key_checks():
    with pytest.raises(ValueError, match="'times'"):
        create_sample_dataset(_samples(), {"times": "sequence"}, OUTPUT_SCHEMA)
    with pytest.raises(ValueError, match="codes"):
        create_sample_dataset(_samples(), {"codes": "sequence"}, {"codes": "multilabel"})
    with pytest.raises(ValueError, match="input_schema is empty"):
        create_sample_dataset(_samples(), {}, OUTPUT_SCHEMA)
    with pytest.raises(ValueError, match="schema"):
        create_sample_dataset(_samples(), INPUT_SCHEMA)


def test_empty_code_lists_are_valid_data(dataset):
    item = dataset[2]
    assert item["codes"].shape == (0,)
    assert item["visits"].shape == (0, 0)
    assert item["labs"][1].shape == (0, 2)
    assert item["stages"][1].shape == (0,)
    batch = dataset.collate([dataset[2]])
    assert batch["codes"].shape == (1, 0)
    assert batch["labs"].shape == (1, 0, 2)
    assert batch["masks"]["labs"].shape == (1, 0)


# ----------------------------------------------------------------------------- schema reuse


def test_fitted_schema_converts_new_samples_with_training_vocabulary(dataset):
    new = [
        {
            "patient_id": "n0",
            "codes": ["c", "zz", "a"],
            "visits": [["yy", "b"]],
            "labs": ([0.0], [[1.0, 1.0]]),
            "stages": ([0.0, 1.0], ["b", "new"]),
            "demo": [0.1, 0.0],
            "label": 0,
        }
    ]
    converted = create_sample_dataset(new, schema=dataset.schema)
    assert converted.schema is dataset.schema
    assert converted[0]["codes"].tolist() == [4, UNK_ID, 2]
    assert converted[0]["visits"].tolist() == [[UNK_ID, 3]]
    assert converted[0]["stages"][1].tolist() == [3, UNK_ID]
    assert converted.has_labels
    assert converted[0]["label"].tolist() == [0.0]
    # The training vocabulary is unchanged by the conversion.
    assert "zz" not in dataset.input_processors["codes"].vocabulary.code_to_id


def test_fitted_schema_allows_labels_absent_from_all_samples(dataset, make_tiny_model):
    new = [{k: v for k, v in s.items() if k != "label"} for s in _samples()]
    unlabeled = create_sample_dataset(new, schema=dataset.schema)
    assert not unlabeled.has_labels
    assert "label" not in unlabeled[0]
    batch = next(iter(get_dataloader(unlabeled, batch_size=3)))
    assert "label" not in batch
    model = make_tiny_model("Transformer", dataset).eval()
    with torch.no_grad():
        out = model(**batch)
    assert "loss" not in out
    assert "y_true" not in out
    assert out["y_prob"].shape == (3, 1)


def test_fitted_schema_rejects_labels_in_some_samples_only(dataset):
    new = _samples()
    del new[1]["label"]
    with pytest.raises(ValueError, match=r"sample 1\b.*'label'"):
        create_sample_dataset(new, schema=dataset.schema)


def test_fitted_schema_with_different_input_schema_raises(dataset):
    with pytest.raises(ValueError, match="differs"):
        create_sample_dataset(_samples(), {"codes": "sequence"}, schema=dataset.schema)


def test_fitted_schema_state_dict_round_trip(dataset):
    state = dataset.schema.state_dict()
    restored = FittedSchema.from_state_dict(copy.deepcopy(state))
    assert restored.input_schema == dataset.input_schema
    assert restored.output_schema == dataset.output_schema
    assert restored.state_dict() == state
    a = create_sample_dataset(_samples(), schema=dataset.schema)
    b = create_sample_dataset(_samples(), schema=restored)
    for x, y in zip(a.items, b.items, strict=True):
        for key in dataset.feature_keys:
            xs = x[key] if isinstance(x[key], tuple) else (x[key],)
            ys = y[key] if isinstance(y[key], tuple) else (y[key],)
            assert all(torch.equal(p, q) for p, q in zip(xs, ys, strict=True))
    with pytest.raises(ValueError, match="version"):
        FittedSchema.from_state_dict({**state, "format_version": 99})


# ----------------------------------------------------------------------------- loaders


def _many_samples(n: int, visits_per_patient: int = 1) -> list[dict]:
    out = []
    for i in range(n):
        for v in range(visits_per_patient):
            out.append(
                {
                    "patient_id": f"p{i:03d}",
                    "visit_id": f"v{v}",
                    "codes": [f"c{(i + j) % 7}" for j in range(1 + i % 4)],
                    "label": i % 2,
                }
            )
    return out


def test_get_dataloader_batches():
    ds = create_sample_dataset(_many_samples(10), {"codes": "sequence"}, {"label": "binary"})
    batches = list(get_dataloader(ds, batch_size=4))
    assert [len(b["patient_id"]) for b in batches] == [4, 4, 2]
    assert [pid for b in batches for pid in b["patient_id"]] == ds.patient_ids
    for b in batches:
        assert b["codes"].shape[0] == len(b["patient_id"])
        assert b["codes"].shape[1] == max(1 + int(p[1:]) % 4 for p in b["patient_id"])
        assert b["label"].shape == (len(b["patient_id"]), 1)


def test_get_dataloader_seeded_shuffle_is_reproducible():
    ds = create_sample_dataset(_many_samples(20), {"codes": "sequence"}, {"label": "binary"})

    def order(seed):
        return [p for b in get_dataloader(ds, 5, shuffle=True, seed=seed) for p in b["patient_id"]]

    first = order(3)
    assert first == order(3)
    assert sorted(first) == sorted(ds.patient_ids)
    assert first != ds.patient_ids
    assert order(3) != order(4)


def test_get_dataloader_needs_sample_dataset():
    with pytest.raises(TypeError, match="SampleDataset"):
        get_dataloader([1, 2, 3], batch_size=2)


def test_split_by_patient_disjoint_and_complete():
    ds = create_sample_dataset(
        _many_samples(40, visits_per_patient=3), {"codes": "sequence"}, {"label": "binary"}
    )
    parts = split_by_patient(ds, (0.5, 0.25, 0.25), seed=1)
    assert len(parts) == 3
    patient_sets = [set(p.patient_ids) for p in parts]
    assert patient_sets[0].isdisjoint(patient_sets[1])
    assert patient_sets[0].isdisjoint(patient_sets[2])
    assert patient_sets[1].isdisjoint(patient_sets[2])
    assert set().union(*patient_sets) == set(ds.patient_ids)
    assert sum(len(p) for p in parts) == len(ds)
    assert [len(s) for s in patient_sets] == [20, 10, 10]
    for part in parts:
        assert part.schema is ds.schema
        # Every visit of a patient goes to the same part.
        assert all(part.patient_ids.count(pid) == 3 for pid in set(part.patient_ids))
    again = split_by_patient(ds, (0.5, 0.25, 0.25), seed=1)
    assert [p.patient_ids for p in again] == [p.patient_ids for p in parts]
    other = split_by_patient(ds, (0.5, 0.25, 0.25), seed=2)
    assert [set(p.patient_ids) for p in other] != patient_sets


def test_split_by_patient_rejects_bad_ratios(dataset):
    with pytest.raises(ValueError, match="ratios"):
        split_by_patient(dataset, (0.5, 0.2))
    with pytest.raises(ValueError, match="ratios"):
        split_by_patient(dataset, (1.5, -0.5))


def test_move_to_device_keeps_nested_dicts(dataset):
    batch = dataset.collate(dataset.items)
    moved = move_to_device(batch, "meta")
    assert set(moved) == set(batch)
    assert moved["patient_id"] == batch["patient_id"]
    assert moved["visit_id"] == batch["visit_id"]
    assert set(moved["masks"]) == {"labs"}
    assert set(moved["times"]) == {"labs", "stages"}
    assert moved["masks"]["labs"].device.type == "meta"
    assert moved["times"]["stages"].device.type == "meta"
    for key in [*INPUT_SCHEMA, "label"]:
        assert moved[key].device.type == "meta"
        assert moved[key].shape == batch[key].shape
        assert moved[key].dtype == batch[key].dtype
    # The original batch is not modified.
    assert batch["codes"].device.type == "cpu"
    assert batch["masks"]["labs"].device.type == "cpu"
    on_cpu = move_to_device(batch, torch.device("cpu"))
    assert torch.equal(on_cpu["times"]["labs"], batch["times"]["labs"])

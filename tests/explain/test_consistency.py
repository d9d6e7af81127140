"""Attributions and data must describe the same patients and codes (explain.consistency)."""

from __future__ import annotations

import copy

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import explain_cohort
from ehrlens.explain.consistency import UNIT_COLUMNS, check_attributions_match, data_units
from ehrlens.models import Transformer


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(
        12, layout="nested", seed=2, include_labs=True, include_demographics=True
    )


@pytest.fixture(scope="module")
def dataset(cohort):
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


@pytest.fixture(scope="module")
def model(dataset):
    torch.manual_seed(0)
    return Transformer(dataset, embedding_dim=16, heads=2, num_layers=1, dropout=0.0).eval()


@pytest.fixture(scope="module")
def frame(model, dataset):
    return explain_cohort(model, dataset, ["rollout", "random"], batch_size=5).to_frame()


def _changed(cohort, dataset, edit):
    samples = copy.deepcopy(cohort.samples)
    edit(samples)
    return create_sample_dataset(samples, schema=dataset.schema)


def test_data_units_are_the_key_columns_of_the_table(frame, dataset, model):
    ids = list(dict.fromkeys(frame["patient_id"]))
    units = data_units(dataset, model.schema, ids, batch_size=5)
    one_method = frame[frame["method"] == "rollout"].reset_index(drop=True)
    assert list(units.columns) == list(UNIT_COLUMNS)
    assert units["patient_id"].tolist() == one_method["patient_id"].tolist()
    assert units["code"].tolist() == one_method["code"].tolist()
    assert units["position"].tolist() == one_method["position"].tolist()
    assert units["visit"].isna().tolist() == one_method["visit"].isna().tolist()


def test_the_same_data_matches_in_any_patient_order(frame, dataset, model):
    check_attributions_match(frame, dataset, model.schema)
    reversed_data = dataset.subset(list(range(len(dataset)))[::-1])
    check_attributions_match(frame, reversed_data, model.schema)
    first_half = frame[frame["patient_id"].isin(dataset.patient_ids[:6])]
    check_attributions_match(first_half, dataset, model.schema)  # data may hold more patients


def test_a_changed_code_is_named(cohort, dataset, model, frame):
    pid = cohort.samples[3]["patient_id"]
    first_code = cohort.samples[3]["diagnoses"][0][0]
    seen = [c for s in cohort.samples for visit in s["diagnoses"] for c in visit]
    other = next(c for c in seen if c != first_code)  # a code the model knows

    def edit(samples):
        samples[3]["diagnoses"][0][0] = other

    with pytest.raises(ValueError) as error:
        check_attributions_match(frame, _changed(cohort, dataset, edit), model.schema)
    assert str(error.value) == (
        f"patient {pid!r}, method 'rollout': the attributions and the data differ (feature "
        f"'diagnoses', visit 0, position 0: code {first_code!r} in the attributions, {other!r} "
        "in the data); the attributions were computed on other data. Explain this data again, "
        "or report on the data that was explained."
    )


def test_a_removed_or_added_visit_is_named(cohort, dataset, model, frame):
    pid = cohort.samples[5]["patient_id"]
    visits = cohort.samples[5]["diagnoses"]

    def drop_last_visit(samples):
        samples[5]["diagnoses"] = visits[:-1]

    with pytest.raises(ValueError) as error:
        check_attributions_match(frame, _changed(cohort, dataset, drop_last_visit), model.schema)
    last = len(visits) - 1
    assert (
        f"patient {pid!r}, method 'rollout': the attributions and the data differ (feature "
        f"'diagnoses', visit {last}, position 0: code {visits[last][0]!r} in the attributions, "
        "none in the data)"
    ) in str(error.value)

    def add_visit(samples):
        samples[5]["diagnoses"] = [*visits, [visits[0][0]]]

    with pytest.raises(ValueError) as error:
        check_attributions_match(frame, _changed(cohort, dataset, add_visit), model.schema)
    assert (
        f"(feature 'diagnoses', visit {len(visits)}, position 0: code {visits[0][0]!r} in the "
        "data, none in the attributions)"
    ) in str(error.value)


def test_an_explained_patient_missing_from_the_data_is_named(dataset, model, frame):
    missing = dataset.patient_ids[0]
    with pytest.raises(ValueError) as error:
        check_attributions_match(frame, dataset.subset(range(1, len(dataset))), model.schema)
    assert str(error.value) == (
        f"1 explained patient(s) are not in the data (first: [{missing!r}]); the attributions "
        "were computed on other data"
    )

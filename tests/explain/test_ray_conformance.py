"""Conformance, Ray = local: every registered method that the model supports, run by the Ray
engine on one small cohort, gives the local engine's rows (the rest of the conformance suite is
``tests/interpret/test_conformance.py``; this part lives here for the session's Ray runtime).

Both runs cut the same shards and batches; scores come from other processes, so floats compare
within ``FLOAT32_ACROSS`` (``tests/_tolerance.py``), every other column exactly.
"""

from __future__ import annotations

import pytest
import torch

from _tolerance import FLOAT32_ACROSS, assert_same_rows
from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import explain_cohort
from ehrlens.explain.ray_engine import explain_cohort_ray
from ehrlens.interpret.registry import METHODS, make_interpreter
from ehrlens.models import Transformer
from ehrlens.models.directory import load_model_dir, save_model_dir

pytestmark = pytest.mark.slow
N_PATIENTS = 6
SHARD = 3
BATCH = 3
KEYS = ["patient_id", "method", "feature", "visit", "position"]


def _supported(model) -> list[str]:
    names = []
    for name in METHODS:
        try:
            make_interpreter(name, model)
        except TypeError:
            continue
        names.append(name)
    return names


@pytest.fixture(scope="module")
def both(tmp_path_factory, ray_runtime):
    """``(methods, by Ray, local)``: one run of every supported method by each engine."""
    root = tmp_path_factory.mktemp("ray_conformance")
    cohort = generate_cohort(N_PATIENTS, layout="nested", seed=4)
    data = write_jsonl(cohort.samples, root / "samples.jsonl")
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    saved = Transformer(dataset, embedding_dim=8, heads=2, num_layers=2, dropout=0.0).eval()
    save_model_dir(saved, root / "model")
    model, card = load_model_dir(root / "model")
    methods = _supported(model)
    options = dict(shard_size=SHARD, batch_size=BATCH)
    local = explain_cohort(
        model, dataset, methods, out_dir=root / "local", model_id=card["model_id"], **options
    ).to_frame()
    by_ray = explain_cohort_ray(root / "model", data, methods, out_dir=root / "ray", **options)
    return methods, by_ray.to_frame(), local


def _rows(frame, method):
    rows = frame[frame["method"] == method]
    return rows.sort_values(KEYS, kind="stable").reset_index(drop=True)


def test_every_registered_method_is_run_by_both_engines(both):
    methods, by_ray, local = both
    assert set(methods) == set(METHODS)  # the Transformer supports every registered method
    assert set(by_ray["method"]) == set(local["method"]) == set(methods)


@pytest.mark.parametrize("method", list(METHODS))
def test_ray_gives_the_local_rows(both, method):
    _, by_ray, local = both
    expected = _rows(local, method)
    assert len(expected) > 0 and expected["patient_id"].nunique() == N_PATIENTS
    assert_same_rows(_rows(by_ray, method), expected, **FLOAT32_ACROSS)

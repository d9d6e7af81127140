"""A new input type is one processor class plus one registration, and then works end to end.

The type is written here, in the test, and nothing else of the library is touched: a
``"bag_of_codes"`` feature is an unordered list of codes, held as counts over the fitted
vocabulary, ``FloatTensor [batch, vocab]``. Its units are the codes a patient has (count > 0);
absent codes are its padding, although the tensor is float and has no step mask, so any rule
that guessed units from dtype and rank would get it wrong.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch import nn

from ehrlens.data import create_sample_dataset, get_dataloader, register_processor
from ehrlens.data.events import from_events, to_events
from ehrlens.data.processors import (
    FEATURE_PROCESSORS,
    CollatedFeature,
    FeatureProcessor,
    unregister_processor,
)
from ehrlens.explain import explain_cohort
from ehrlens.interpret import AttentionRollout
from ehrlens.metrics import RemovalFaithfulness
from ehrlens.models import BaseModel, Transformer


class CountEmbedding(nn.Module):
    """Code ``j`` with count ``n`` embeds as ``log1p(n) * W[j]``: ``[b, V]`` -> ``[b, V, D]``."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(size, dim))

    def forward(self, counts):
        return torch.log1p(counts)[..., None] * self.weight


class BagOfCodesProcessor(FeatureProcessor):
    """``"bag_of_codes"``: a list of codes, order ignored -> counts ``FloatTensor [vocab]``."""

    schema = "bag_of_codes"
    event_kind = "codes"

    def __init__(self) -> None:
        self.codes: list[str] = []

    def fit(self, values, key):
        self.codes = sorted({str(code) for value in values for code in value})

    def process(self, value, key, index=None):
        if not isinstance(value, list):
            raise TypeError(f"sample {index}, feature '{key}': expected a list of codes")
        counts = torch.zeros(len(self.codes))
        for code in value:
            if str(code) in self.codes:  # codes unseen in training are dropped
                counts[self.codes.index(str(code))] += 1
        return counts

    def collate(self, items):
        return CollatedFeature(values=torch.stack(list(items)))

    def unit_embedding(self, dim):
        return CountEmbedding(len(self.codes), dim)

    def unit_mask(self, values, step_mask=None):
        return values > 0

    def remove_units(self, values, flags, ablation="zero", step_mask=None):
        return values.masked_fill(flags, 0.0)  # a removed code is an absent code

    def long_units(self, values, step_mask=None):
        for j in torch.nonzero(values > 0).flatten().tolist():
            yield None, j, self.codes[j], (j,)

    def from_events(self, events):
        return events.rows["code"].tolist()

    def to_events(self, value, key, patient_id, names=None):
        for code in value:
            yield None, 0.0, str(code), math.nan

    def state_dict(self):
        return {"codes": self.codes}

    def load_state_dict(self, state):
        self.codes = list(state["codes"])


CODES = ["A", "B", "C", "D", "E"]
BAGS = {
    "p0": ["A", "A", "C"],
    "p1": ["B"],
    "p2": ["E", "D", "B", "A"],
    "p3": ["C", "C", "C", "E"],
    "p4": ["A", "B", "C", "D", "E"],
    "p5": ["D", "D"],
}


@pytest.fixture(scope="module")
def registered():
    register_processor(BagOfCodesProcessor)
    yield BagOfCodesProcessor
    unregister_processor("bag_of_codes")


@pytest.fixture(scope="module")
def samples():
    return [
        {"patient_id": pid, "bag": bag, "y": i % 2} for i, (pid, bag) in enumerate(BAGS.items())
    ]


@pytest.fixture(scope="module")
def dataset(registered, samples):
    return create_sample_dataset(samples, {"bag": "bag_of_codes"}, {"y": "binary"})


@pytest.fixture(scope="module")
def model(dataset):
    torch.manual_seed(0)
    return Transformer(dataset, embedding_dim=8, heads=2, num_layers=2, dropout=0.0).eval()


@pytest.fixture(scope="module")
def batch(dataset):
    return next(iter(get_dataloader(dataset, batch_size=len(dataset))))


def expected_counts(bag: list[str]) -> list[float]:
    counts = Counter(bag)
    return [float(counts[code]) for code in CODES]


def reference_rollout(model, batch) -> torch.Tensor:
    """Rollout by full matrix products from the captured maps: [batch, vocab]."""
    model.set_attention_hooks(True, capture_gradients=False)
    try:
        with torch.no_grad():
            model(**batch)
        maps = [a.detach().double() for a, _ in model.get_attention_layers()["bag"]]
    finally:
        model.set_attention_hooks(False)
    seq = maps[0].shape[-1]
    eye = torch.eye(seq, dtype=torch.float64)
    result = eye.repeat(maps[0].shape[0], 1, 1)
    for attention in maps:
        result = 0.5 * (attention.mean(dim=1) + eye) @ result
    return result[:, 0, 1:] * (batch["bag"] > 0)


def test_registration_is_one_call_and_can_be_undone(registered):
    assert FEATURE_PROCESSORS["bag_of_codes"] is BagOfCodesProcessor
    register_processor(BagOfCodesProcessor)  # the same class again: nothing changes
    assert FEATURE_PROCESSORS["bag_of_codes"] is BagOfCodesProcessor


def test_dataset_holds_counts_over_the_vocabulary(dataset, batch):
    assert dataset.input_processors["bag"].codes == CODES
    assert batch["bag"].tolist() == [expected_counts(bag) for bag in BAGS.values()]
    assert "bag" not in batch["masks"]


def test_transformer_forward_and_rollout_shaped_like_the_input(model, batch):
    out = model(**batch)
    assert out["logit"].shape == (len(BAGS), 1)
    with torch.inference_mode():
        scores = AttentionRollout(model).attribute(**batch)["bag"]
    assert scores.shape == batch["bag"].shape
    absent = batch["bag"] == 0
    assert bool((scores[absent] == 0).all())  # padding exactly 0
    assert bool((scores[~absent] > 0).all())
    torch.testing.assert_close(scores.double(), reference_rollout(model, batch), atol=1e-6, rtol=0)


def test_attribution_table_has_one_row_per_present_code(model, dataset, batch):
    frame = explain_cohort(model, dataset, ["rollout"]).to_frame()
    expected = [
        (pid, "bag", CODES.index(code), code)
        for pid, bag in BAGS.items()
        for code in sorted(set(bag), key=CODES.index)
    ]
    got = list(frame[["patient_id", "feature", "position", "code"]].itertuples(index=False))
    assert [tuple(row) for row in got] == expected
    assert frame["visit"].isna().all()
    reference = reference_rollout(model, batch)
    patients = list(BAGS)
    for row in frame.itertuples(index=False):
        want = float(reference[patients.index(row.patient_id), row.position])
        assert row.score == pytest.approx(want, abs=1e-6)


def test_removal_faithfulness_removes_codes_by_the_processor(model, batch):
    with torch.inference_mode():
        scores = AttentionRollout(model).attribute(**batch)
    result = RemovalFaithfulness(model, percentages=(50, 100))(scores, batch)
    assert result.n_scored == len(BAGS)

    def probability(counts, target):
        p = model(**{**batch, "bag": counts})["y_prob"][:, 0]
        return torch.where(target == 1, p, 1 - p)

    with torch.no_grad():
        target = result.target
        base = probability(batch["bag"], target)
        without_top, only_top = batch["bag"].clone(), batch["bag"].clone()
        for i, row in enumerate(scores["bag"]):
            present = [j for j in range(len(CODES)) if batch["bag"][i, j] > 0]
            ranked = sorted(present, key=lambda j, row=row: -float(row[j]))
            top = ranked[: math.ceil(len(present) / 2)]
            without_top[i, top] = 0.0
            only_top[i, [j for j in present if j not in top]] = 0.0
        nothing = torch.zeros_like(batch["bag"])
        comprehensiveness = torch.stack(
            [base - probability(without_top, target), base - probability(nothing, target)], 1
        )
        sufficiency = torch.stack([base - probability(only_top, target), torch.zeros_like(base)], 1)
    torch.testing.assert_close(result.comprehensiveness, comprehensiveness, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.sufficiency, sufficiency, atol=1e-6, rtol=0)


def test_saved_model_loads_with_its_processor(model, batch, tmp_path):
    loaded = BaseModel.load(model.save(tmp_path / "bag.pt"))
    assert loaded.schema.input_processors["bag"].codes == CODES
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch)["logit"], model(**batch)["logit"])


def test_event_table_round_trip(registered, samples):
    table = to_events(samples, {"bag": "bag_of_codes"})
    assert len(table) == sum(len(bag) for bag in BAGS.values())
    back = from_events(table, {"bag": "bag_of_codes"})
    assert {s["patient_id"]: Counter(s["bag"]) for s in back} == {
        pid: Counter(bag) for pid, bag in BAGS.items()
    }

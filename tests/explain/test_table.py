"""Attributions as long-format rows: one per (patient, method, non-padding input unit)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pyarrow as pa
import pytest
import torch

from ehrlens.data import create_sample_dataset
from ehrlens.explain import ATTRIBUTION_COLUMNS, attribution_columns, model_fingerprint
from ehrlens.explain.table import arrow_schema, columns_to_arrow, concat_columns
from ehrlens.models import Transformer

SCHEMA = {
    "seq": "sequence",
    "vis": "nested_sequence",
    "stg": "stagenet",
    "flat": "stagenet",
    "labs": "timeseries",
    "demo": "tensor",
}
SAMPLES = [
    {
        "patient_id": "a",
        "seq": ["x", "y", "x"],
        "vis": [["p", "q"], ["r"]],
        "stg": ([0.0, 2.0], [["s1"], ["s2", "s3"]]),
        "flat": ([0.0, 1.0, 3.0], ["f1", "f2", "f1"]),
        "labs": ([0.0, 1.0], [[1.0, 2.0], [3.0, 4.0]]),
        "demo": [0.5, 1.0],
        "y": 1,
    },
    {
        "patient_id": "b",
        "seq": ["y"],
        "vis": [["q"]],
        "stg": ([0.0], [["s1"]]),
        "flat": ([5.0], ["f2"]),
        "labs": ([0.0], [[5.0, 6.0]]),
        "demo": [0.2, 0.0],
        "y": 0,
    },
]


@pytest.fixture(scope="module")
def dataset():
    return create_sample_dataset(SAMPLES, SCHEMA, {"y": "binary"})


def _scores(batch):
    """Distinct, exactly representable scores shaped like each feature (padding included)."""
    out = {}
    for offset, key in enumerate(SCHEMA):
        shape = batch[key].shape
        out[key] = (torch.arange(shape.numel()).reshape(shape) + 100 * offset) / 8
    return out


def _rows(columns):
    return list(zip(*(columns[name] for name in ATTRIBUTION_COLUMNS), strict=True))


def test_every_layout_gives_one_row_per_non_padding_unit(dataset):
    batch = dataset.collate([dataset[0], dataset[1]])
    s = _scores(batch)
    columns = attribution_columns(s, batch, dataset.schema, "rollout", "abc123")
    assert list(columns) == list(ATTRIBUTION_COLUMNS)

    def row(pid, feature, visit, position, code, score):
        value = None  # codes have none; a measurement its value as the model was given it
        if feature in ("labs", "demo"):
            index = (0 if pid == "a" else 1, *((visit,) if visit is not None else ()), position)
            value = float(batch[feature][index])
        # no prediction given (four nulls) and no level (null)
        unit = (pid, feature, visit, position, code, float(score), "rollout", "abc123")
        return (*unit, None, None, None, None, value, None)

    expected = [
        # patient a: features in schema order, then positions
        row("a", "seq", None, 0, "x", s["seq"][0, 0]),
        row("a", "seq", None, 1, "y", s["seq"][0, 1]),
        row("a", "seq", None, 2, "x", s["seq"][0, 2]),
        row("a", "vis", 0, 0, "p", s["vis"][0, 0, 0]),
        row("a", "vis", 0, 1, "q", s["vis"][0, 0, 1]),
        row("a", "vis", 1, 0, "r", s["vis"][0, 1, 0]),
        row("a", "stg", 0, 0, "s1", s["stg"][0, 0, 0]),
        row("a", "stg", 1, 0, "s2", s["stg"][0, 1, 0]),
        row("a", "stg", 1, 1, "s3", s["stg"][0, 1, 1]),
        # one code per stagenet step: the step is the visit, position 0
        row("a", "flat", 0, 0, "f1", s["flat"][0, 0]),
        row("a", "flat", 1, 0, "f2", s["flat"][0, 1]),
        row("a", "flat", 2, 0, "f1", s["flat"][0, 2]),
        # timeseries: step is the visit, measurement column the position, its index the code
        row("a", "labs", 0, 0, "0", s["labs"][0, 0, 0]),
        row("a", "labs", 0, 1, "1", s["labs"][0, 0, 1]),
        row("a", "labs", 1, 0, "0", s["labs"][0, 1, 0]),
        row("a", "labs", 1, 1, "1", s["labs"][0, 1, 1]),
        row("a", "demo", None, 0, "0", s["demo"][0, 0]),
        row("a", "demo", None, 1, "1", s["demo"][0, 1]),
        # patient b: shorter, so the padding of every feature has no row
        row("b", "seq", None, 0, "y", s["seq"][1, 0]),
        row("b", "vis", 0, 0, "q", s["vis"][1, 0, 0]),
        row("b", "stg", 0, 0, "s1", s["stg"][1, 0, 0]),
        row("b", "flat", 0, 0, "f2", s["flat"][1, 0]),
        row("b", "labs", 0, 0, "0", s["labs"][1, 0, 0]),
        row("b", "labs", 0, 1, "1", s["labs"][1, 0, 1]),
        row("b", "demo", None, 0, "0", s["demo"][1, 0]),
        row("b", "demo", None, 1, "1", s["demo"][1, 1]),
    ]
    assert _rows(columns) == expected
    # zero-valued measurements are real units (the step mask, not the value, marks padding)
    assert batch["demo"][1, 1].item() == 0.0


def test_unseen_codes_are_named_unk_and_absent_features_are_skipped(dataset):
    new = [{**SAMPLES[1], "patient_id": "c", "seq": ["zzz", "x"], "vis": [["q", "new"]]}]
    batch = create_sample_dataset(new, schema=dataset.schema).collate(
        [create_sample_dataset(new, schema=dataset.schema)[0]]
    )
    scores = {"seq": torch.tensor([[0.25, 0.5]]), "vis": torch.tensor([[[1.0, 2.0]]])}
    columns = attribution_columns(scores, batch, dataset.schema, "flow", "m")
    assert _rows(columns) == [
        ("c", "seq", None, 0, "<unk>", 0.25, "flow", "m", *[None] * 4, None, None),
        ("c", "seq", None, 1, "x", 0.5, "flow", "m", *[None] * 4, None, None),
        ("c", "vis", 0, 0, "q", 1.0, "flow", "m", *[None] * 4, None, None),
        ("c", "vis", 0, 1, "<unk>", 2.0, "flow", "m", *[None] * 4, None, None),
    ]


def test_level_column_says_code_or_visit_per_feature(dataset):
    batch = dataset.collate([dataset[0]])
    s = _scores(batch)
    levels = {"seq": "code", "vis": "visit", "stg": "visit"}
    columns = attribution_columns(s, batch, dataset.schema, "rollout", "m", levels)
    by_feature = {}
    for feature, level in zip(columns["feature"], columns["level"], strict=True):
        by_feature.setdefault(feature, set()).add(level)
    assert by_feature == {
        "seq": {"code"},
        "vis": {"visit"},
        "stg": {"visit"},
        "flat": {None},  # not stated: null, never a guess
        "labs": {None},
        "demo": {None},
    }


def test_unknown_processor_is_a_type_error(dataset):
    batch = dataset.collate([dataset[0]])

    class Odd:
        pass

    fake_schema = SimpleNamespace(feature_keys=["seq"], input_processors={"seq": Odd()})
    with pytest.raises(TypeError, match="no long-format layout for processor Odd"):
        attribution_columns({"seq": torch.zeros(1, 3)}, batch, fake_schema, "m", "id")


def test_arrow_schema_and_conversion(dataset):
    schema = arrow_schema()
    assert schema.names == list(ATTRIBUTION_COLUMNS)
    assert [str(t) for t in schema.types] == [
        "string",
        "string",
        "int32",
        "int32",
        "string",
        "double",
        "string",
        "string",
        "string",  # predicted_class
        "double",
        "string",  # explained_class
        "double",
        "double",  # value
        "string",  # level
    ]
    batch = dataset.collate([dataset[0], dataset[1]])
    first = attribution_columns(_scores(batch), batch, dataset.schema, "rollout", "id")
    second = attribution_columns(_scores(batch), batch, dataset.schema, "chefer", "id")
    joined = concat_columns([first, second])
    assert len(joined["score"]) == 2 * 26
    assert joined["method"] == ["rollout"] * 26 + ["chefer"] * 26
    table = columns_to_arrow(joined)
    assert table.schema.equals(schema)
    assert table.num_rows == 52
    assert table.column("visit").null_count == 2 * (3 + 2 + 1 + 2)  # seq and demo rows
    assert table.slice(0, 1).to_pylist() == [
        {
            "patient_id": "a",
            "feature": "seq",
            "visit": None,
            "position": 0,
            "code": "x",
            "score": 0.0,
            "method": "rollout",
            "model_id": "id",
            "predicted_class": None,
            "predicted_probability": None,
            "explained_class": None,
            "explained_probability": None,
            "level": None,
            "value": None,
        }
    ]
    assert columns_to_arrow(concat_columns([])).num_rows == 0
    assert isinstance(table, pa.Table)


def _tiny(dataset, seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = {"embedding_dim": 16, "heads": 2, "num_layers": 1, "dropout": 0.0, **overrides}
    return Transformer(dataset, **kwargs)


def test_model_fingerprint_is_stable_and_tracks_weights_and_hparams(tmp_path):
    ds = create_sample_dataset(
        [
            {"patient_id": "a", "seq": ["x", "y"], "y": 1},
            {"patient_id": "b", "seq": ["y"], "y": 0},
        ],
        {"seq": "sequence"},
        {"y": "binary"},
    )
    model = _tiny(ds)
    fingerprint = model_fingerprint(model)
    assert re.fullmatch(r"[0-9a-f]{12}", fingerprint)
    assert model_fingerprint(_tiny(ds)) == fingerprint  # same seed, same weights
    assert model_fingerprint(_tiny(ds, seed=1)) != fingerprint
    reloaded = Transformer.load(model.save(tmp_path / "m.pt"))
    assert model_fingerprint(reloaded) == fingerprint
    assert model_fingerprint(_tiny(ds, dropout=0.5)) != fingerprint  # same weights, hparams
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6
    assert model_fingerprint(model) != fingerprint


def test_a_table_without_the_value_column_still_has_a_digest(dataset):
    # shards written before rows carried ``value`` are verified over the columns they have
    from ehrlens.explain.shards import table_digest

    batch = dataset.collate([dataset[0]])
    table = columns_to_arrow(attribution_columns(_scores(batch), batch, dataset.schema, "r", "m"))
    older = table.drop_columns(["value"])
    assert table_digest(older) == table_digest(older)
    assert table_digest(older) != table_digest(table)

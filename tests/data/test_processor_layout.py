"""What each built-in processor decides for its input type, against hand-computed values:
rank, real units, embedding and pooling, score layout, removal, table units, event rows,
and the registry that finds processors by schema string."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from ehrlens.data.processors import (
    FEATURE_PROCESSORS,
    PAD_ID,
    CodeProcessor,
    ElementwiseEmbedding,
    EventRows,
    FeatureProcessor,
    NestedSequenceProcessor,
    SequenceProcessor,
    StageNetProcessor,
    TensorProcessor,
    TimeseriesProcessor,
    feature_processor_class,
    make_feature_processor,
    processor_for_tensor,
    register_processor,
    unregister_processor,
)


def fitted(cls, values, key="k"):
    processor = cls()
    processor.fit(values, key)
    return processor


def batch_of(processor, values, key="k"):
    return processor.collate([processor.process(v, key, i) for i, v in enumerate(values)])


# ----------------------------------------------------------------------------- codes


@pytest.fixture
def sequence():
    return fitted(SequenceProcessor, [["a", "b", "c"]])  # ids: a=2, b=3, c=4


def test_sequence_masks_scores_and_removal(sequence):
    values = batch_of(sequence, [["c", "a"], ["b", "zz", "a"]]).values
    assert values.tolist() == [[4, 2, 0], [3, 1, 2]]
    assert sequence.input_rank == 2 and sequence.holds_codes
    assert sequence.unit_mask(values).tolist() == [[True, True, False], [True, True, True]]
    assert sequence.position_mask(values).tolist() == [[True, True, False], [True, True, True]]
    scores = torch.tensor([[0.5, 0.25, 9.0], [1.0, 2.0, 3.0]])
    spread = sequence.scores_to_inputs("k", scores, values)
    assert spread.tolist() == [[0.5, 0.25, 0.0], [1.0, 2.0, 3.0]]
    flags = torch.tensor([[True, False, False], [False, True, True]])
    removed = sequence.remove_units(values, flags, "mean")
    assert removed.dtype == torch.long
    assert removed.tolist() == [[0, 2, 0], [3, 0, 0]]


def test_sequence_embedding_has_a_zero_pad_row_and_checks_ids(sequence):
    unit = sequence.unit_embedding(4)
    assert isinstance(unit, nn.Embedding) and unit.num_embeddings == 5
    assert unit.weight[PAD_ID].abs().sum() == 0
    ids = torch.tensor([[2, 0]])
    assert torch.equal(sequence.embed_units("k", unit, ids), unit(ids))
    with pytest.raises(ValueError, match=r"feature 'k': sample 1 has code id 5, outside"):
        sequence.embed_units("k", unit, torch.tensor([[2, 0], [5, 1]]))


def test_sequence_decode_and_table_units(sequence):
    assert sequence.decode([4, 1, 0]) == ["c", "<unk>", "<pad>"]
    units = list(sequence.long_units(torch.tensor([3, 1, 0, 0])))
    assert [u[:3] for u in units] == [(None, 0, "b"), (None, 1, "<unk>")]
    assert [tuple(int(i) for i in u[3]) for u in units] == [(0,), (1,)]


def test_check_input_names_key_rank_and_dtype(sequence):
    with pytest.raises(TypeError, match=r"feature 'dx': expected a tensor, got list"):
        sequence.check_input("dx", [[1]])
    with pytest.raises(ValueError, match=r"rank 2 .* for schema 'sequence', got shape \(2,\)"):
        sequence.check_input("dx", torch.tensor([1, 2]))
    with pytest.raises(TypeError, match=r"feature 'dx': code ids must be an integer tensor"):
        sequence.check_input("dx", torch.ones(1, 2))


def test_scores_of_the_wrong_shape_name_the_feature(sequence):
    with pytest.raises(ValueError, match=r"feature 'dx': relevance shape \(1, 2\) does not"):
        sequence.scores_to_inputs("dx", torch.ones(1, 2), torch.ones(1, 3, dtype=torch.long))


@pytest.fixture
def nested():
    return fitted(NestedSequenceProcessor, [[["a"], ["b", "c"]]])  # a=2, b=3, c=4


def test_nested_visits_pool_their_codes_and_spread_their_score(nested):
    values = batch_of(nested, [[["a", "b"], ["c"]], [[], ["b"]]]).values
    assert values.tolist() == [[[2, 3], [4, 0]], [[0, 0], [3, 0]]]
    assert nested.input_rank == 3
    assert nested.position_mask(values).tolist() == [[True, True], [False, True]]
    # unit embeddings 1..4 in one dim for ids 1..4 (pad 0): visits are means of real codes
    embedded = values.to(torch.float32)[..., None]
    pooled = nested.pool_units(embedded, values)[..., 0]
    assert pooled.tolist() == [[2.5, 4.0], [0.0, 3.0]]
    spread = nested.scores_to_inputs("k", torch.tensor([[0.5, 0.25], [7.0, 1.0]]), values)
    assert spread.tolist() == [[[0.5, 0.5], [0.25, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]
    per_unit = nested.scores_to_inputs("k", torch.arange(8.0).reshape(2, 2, 2), values)
    assert per_unit.tolist() == [[[0.0, 1.0], [2.0, 0.0]], [[0.0, 0.0], [6.0, 0.0]]]
    units = [u[:3] for u in nested.long_units(values[0])]
    assert units == [(0, 0, "a"), (0, 1, "b"), (1, 0, "c")]


def test_stagenet_layout_follows_the_fitted_nesting():
    flat = fitted(StageNetProcessor, [([0.0, 1.0], ["a", "b"])])
    assert flat.input_rank == 2
    values = batch_of(flat, [([0.0, 2.0], ["b", "a"])]).values
    assert [u[:3] for u in flat.long_units(values[0])] == [(0, 0, "b"), (1, 0, "a")]
    nested = fitted(StageNetProcessor, [([0.0], [["a", "b"]])])
    assert nested.input_rank == 3
    assert isinstance(flat, CodeProcessor) and isinstance(nested, CodeProcessor)


# ----------------------------------------------------------------------------- numbers


@pytest.fixture
def timeseries():
    return fitted(TimeseriesProcessor, [([0.0], [[1.0, 2.0]])])


def test_timeseries_masks_follow_the_step_mask(timeseries):
    collated = batch_of(timeseries, [([0.0, 1.0], [[1.0, 2.0], [3.0, 4.0]]), ([5.0], [[0.0, 6.0]])])
    values, mask = collated.values, collated.mask
    assert timeseries.needs_step_mask and timeseries.input_rank == 3
    assert timeseries.position_mask(values, mask).tolist() == [[True, True], [True, False]]
    assert timeseries.unit_mask(values, mask)[1].tolist() == [[True, True], [False, False]]
    assert bool(timeseries.unit_mask(values).all())
    spread = timeseries.scores_to_inputs("k", torch.tensor([[0.5, 0.25], [2.0, 9.0]]), values, mask)
    assert spread.tolist() == [[[0.5, 0.5], [0.25, 0.25]], [[2.0, 2.0], [0.0, 0.0]]]
    assert [u[:3] for u in timeseries.long_units(values[1], mask[1])] == [(0, 0, "0"), (0, 1, "1")]


def test_timeseries_removal_by_zero_and_by_the_mean_of_real_steps(timeseries):
    collated = batch_of(timeseries, [([0.0, 1.0], [[1.0, 2.0], [3.0, 4.0]]), ([5.0], [[0.0, 6.0]])])
    values, mask = collated.values, collated.mask
    flags = torch.zeros(values.shape, dtype=torch.bool)
    flags[0, 0, 1] = True
    flags[1, 0, 0] = True
    zero = timeseries.remove_units(values, flags, "zero", mask)
    assert zero.tolist() == [[[1.0, 0.0], [3.0, 4.0]], [[0.0, 6.0], [0.0, 0.0]]]
    # channel means over the three real steps: (1 + 3 + 0) / 3 and (2 + 4 + 6) / 3
    mean = timeseries.remove_units(values, flags, "mean", mask)
    assert mean[0, 0, 1].item() == pytest.approx(4.0)
    assert mean[1, 0, 0].item() == pytest.approx(4.0 / 3)
    assert mean[0, 1].tolist() == [3.0, 4.0]


def test_timeseries_embeds_each_step_in_the_weights_dtype(timeseries):
    unit = timeseries.unit_embedding(3).double()
    assert isinstance(unit, nn.Linear) and unit.in_features == 2
    values = torch.tensor([[[1.0, 2.0]]])
    expected = values.double() @ unit.weight.T + unit.bias
    torch.testing.assert_close(timeseries.embed_units("k", unit, values), expected)


def test_tensor_elements_are_all_units():
    processor = fitted(TensorProcessor, [[0.5, 1.0, 2.0]])
    values = batch_of(processor, [[0.5, 1.0, 2.0], [1.5, 0.0, 4.0]]).values
    assert bool(processor.unit_mask(values).all())
    assert processor.scores_to_inputs("k", values * 2, values).tolist() == (values * 2).tolist()
    flags = torch.tensor([[True, False, False], [False, False, True]])
    assert processor.remove_units(values, flags, "mean").tolist() == [
        [1.0, 1.0, 2.0],
        [1.5, 0.0, 3.0],
    ]
    assert [u[:3] for u in processor.long_units(values[0])] == [
        (None, 0, "0"),
        (None, 1, "1"),
        (None, 2, "2"),
    ]
    unit = processor.unit_embedding(4)
    assert isinstance(unit, ElementwiseEmbedding) and unit.weight.shape == (3, 4)


# ----------------------------------------------------------------------------- events


def events(key, rows, visits=(), visit_times=None, start=0.0, names=None):
    frame = pd.DataFrame(rows, columns=["row", "visit", "time", "code", "value"])
    return EventRows(key, "p", frame, list(visits), visit_times or {}, start, names)


def test_code_features_from_event_rows():
    rows = [(0, "v1", 1.0, "a", math.nan), (3, "v1", 1.0, "b", math.nan)]
    rows.append((5, "v3", 4.0, "c", math.nan))
    visits, times = ["v1", "v2", "v3"], {"v1": 1.0, "v2": 2.0, "v3": 4.0}
    assert SequenceProcessor().from_events(events("k", rows)) == ["a", "b", "c"]
    nested = NestedSequenceProcessor().from_events(events("k", rows, visits, times))
    assert nested == [["a", "b"], [], ["c"]]
    stagenet = StageNetProcessor().from_events(events("k", rows, visits, times, start=1.0))
    assert stagenet == ([0.0, 1.0, 3.0], [["a", "b"], [], ["c"]])


def test_numeric_features_from_event_rows():
    rows = [(0, "@1", 1.0, "x", 5.0), (1, "@1", 1.0, "y", 6.0), (2, "@3", 3.0, "x", 7.0)]
    series = TimeseriesProcessor().from_events(events("k", rows, names=["x", "y"]))
    assert series == ([1.0, 3.0], [[5.0, 6.0], [7.0, 6.0]])  # y carried forward
    vector = TensorProcessor().from_events(events("k", rows[:2], names=["y", "x"]))
    assert vector == [6.0, 5.0]
    with pytest.raises(ValueError, match=r"patient 'p', feature 'k': no value for \['z'\]"):
        TensorProcessor().from_events(events("k", rows[:2], names=["x", "y", "z"]))


def test_event_rows_written_by_each_processor():
    assert list(SequenceProcessor().to_events(["a", 7], "k", "p")) == [
        ("p-0", 0.0, "a", pytest.approx(math.nan, nan_ok=True)),
        ("p-1", 1.0, "7", pytest.approx(math.nan, nan_ok=True)),
    ]
    stagenet = list(StageNetProcessor().to_events(([2.0, 5.0], [["a"], ["b", "c"]]), "k", "p"))
    expected = [("p-0", 2.0, "a"), ("p-1", 5.0, "b"), ("p-1", 5.0, "c")]
    assert [row[:3] for row in stagenet] == expected
    series = TimeseriesProcessor().to_events(([1.0], [[3.0, 4.0]]), "k", "p", ["x", "y"])
    assert list(series) == [(None, 1.0, "x", 3.0), (None, 1.0, "y", 4.0)]
    assert list(TensorProcessor().to_events([0.5], "k", "p")) == [(None, 0.0, "0", 0.5)]


# ----------------------------------------------------------------------------- registry


class _Minimal(FeatureProcessor):
    schema = "minimal_test_type"

    def fit(self, values, key):
        pass

    def process(self, value, key, index=None):
        return torch.tensor([float(value)])

    def collate(self, items):
        raise NotImplementedError

    def unit_embedding(self, dim):
        return nn.Linear(1, dim)

    def unit_mask(self, values, step_mask=None):
        return torch.ones(values.shape, dtype=torch.bool)

    def remove_units(self, values, flags, ablation="zero", step_mask=None):
        return values

    def long_units(self, values, step_mask=None):
        return iter(())


def test_registry_adds_finds_and_removes_a_type():
    assert register_processor(_Minimal) is _Minimal
    try:
        assert feature_processor_class("minimal_test_type", "k") is _Minimal
        assert isinstance(make_feature_processor("minimal_test_type", "k"), _Minimal)
        with pytest.raises(ValueError, match="max_length does not apply"):
            make_feature_processor("minimal_test_type", "k", max_length=3)

        class Other(_Minimal):
            pass

        with pytest.raises(ValueError, match="'minimal_test_type' is already registered"):
            register_processor(Other)
    finally:
        assert unregister_processor("minimal_test_type") is _Minimal
    assert "minimal_test_type" not in FEATURE_PROCESSORS
    with pytest.raises(ValueError, match="unknown input schema 'minimal_test_type'"):
        make_feature_processor("minimal_test_type", "k")


def test_registry_refuses_incomplete_classes():
    class NoSchema(_Minimal):
        schema = ""

    class Abstract(FeatureProcessor):
        schema = "abstract_test_type"

    with pytest.raises(TypeError, match="needs a class attribute schema"):
        register_processor(NoSchema)
    with pytest.raises(TypeError, match=r"Abstract \(schema 'abstract_test_type'\) does not"):
        register_processor(Abstract)
    with pytest.raises(TypeError, match="expects a FeatureProcessor or LabelProcessor"):
        register_processor(dict)
    with pytest.raises(ValueError, match="'nothing_here' is not registered"):
        unregister_processor("nothing_here")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (torch.zeros(2, 3, dtype=torch.long), SequenceProcessor),
        (torch.zeros(2, 3, 4, dtype=torch.long), NestedSequenceProcessor),
        (torch.zeros(2, 3, 4), TimeseriesProcessor),
        (torch.zeros(2, 3), TensorProcessor),
    ],
)
def test_bare_tensors_are_read_by_dtype_and_rank(values, expected):
    assert type(processor_for_tensor(values)) is expected


def test_bare_code_tensors_take_the_given_pad_id():
    ids = torch.tensor([[5, 1, 1]])
    assert processor_for_tensor(ids, pad_id=1).unit_mask(ids).tolist() == [[True, False, False]]
    assert processor_for_tensor(ids, pad_id=None).unit_mask(ids).tolist() == [[True] * 3]
    assert SequenceProcessor.pad_id == PAD_ID  # the class default is untouched

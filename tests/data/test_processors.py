"""Input and label processors: fit/process, collate, unknown codes, state round trips."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ehrlens.data import create_sample_dataset
from ehrlens.data.processors import (
    PAD_ID,
    UNK_ID,
    BinaryLabelProcessor,
    MulticlassLabelProcessor,
    MultilabelLabelProcessor,
    NestedSequenceProcessor,
    RegressionLabelProcessor,
    SequenceProcessor,
    StageNetProcessor,
    TensorProcessor,
    TimeseriesProcessor,
    make_feature_processor,
    make_label_processor,
)


def test_pad_and_unk_ids():
    assert PAD_ID == 0
    assert UNK_ID == 1


# ----------------------------------------------------------------------------- sequence


def test_sequence_ids_follow_sorted_vocabulary():
    proc = SequenceProcessor()
    proc.fit([["I10", "E11.9"], ["I10", "A01"]], key="conditions")
    assert proc.vocabulary.code_to_id == {"<pad>": 0, "<unk>": 1, "A01": 2, "E11.9": 3, "I10": 4}
    assert proc.vocab_size == 5
    out = proc.process(["I10", "A01", "E11.9"], key="conditions", index=0)
    assert out.dtype == torch.long
    assert out.tolist() == [4, 2, 3]


def test_sequence_unknown_code_maps_to_unk():
    proc = SequenceProcessor()
    proc.fit([["I10", "E11.9"], ["I10"]], key="conditions")
    # The module docstring's example: Z99 is unseen.
    assert proc.process(["E11.9", "Z99"], key="conditions", index=0).tolist() == [2, UNK_ID]


def test_sequence_int_codes_are_looked_up_as_strings():
    proc = SequenceProcessor()
    proc.fit([[10, 2], [3]], key="codes")
    # Sorted as strings: "10" < "2" < "3".
    assert proc.process([2, 10, 3], key="codes").tolist() == [3, 2, 4]
    assert proc.process(["2"], key="codes").tolist() == [3]


def test_sequence_empty_list_is_valid():
    proc = SequenceProcessor()
    proc.fit([["a"], []], key="codes")
    out = proc.process([], key="codes", index=1)
    assert out.shape == (0,)
    assert out.dtype == torch.long


def test_sequence_collate_pads_with_zero():
    proc = SequenceProcessor()
    proc.fit([["a", "b", "c"]], key="codes")
    items = [proc.process(v, key="codes") for v in (["a"], ["c", "b", "a"], [])]
    collated = proc.collate(items)
    assert collated.values.dtype == torch.long
    assert collated.values.tolist() == [[2, 0, 0], [4, 3, 2], [0, 0, 0]]
    assert collated.mask is None
    assert collated.times is None


def test_processor_used_before_fit_raises():
    with pytest.raises(RuntimeError, match="'codes'"):
        SequenceProcessor().process(["a"], key="codes")


# ----------------------------------------------------------------------------- nested


def test_nested_sequence_process_and_collate():
    proc = NestedSequenceProcessor()
    proc.fit([[["b"], ["a", "c"]], [["c"]]], key="visits")
    assert proc.vocabulary.code_to_id == {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, "c": 4}
    first = proc.process([["b"], ["a", "c", "zz"]], key="visits", index=0)
    assert first.tolist() == [[3, 0, 0], [2, 4, UNK_ID]]
    second = proc.process([["c"]], key="visits", index=1)
    empty = proc.process([], key="visits", index=2)
    assert empty.shape == (0, 0)
    collated = proc.collate([first, second, empty])
    assert collated.values.shape == (3, 2, 3)
    assert collated.values.dtype == torch.long
    assert collated.values[0].tolist() == [[3, 0, 0], [2, 4, 1]]
    assert collated.values[1].tolist() == [[4, 0, 0], [0, 0, 0]]
    assert collated.values[2].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert collated.mask is None
    assert collated.times is None


# ----------------------------------------------------------------------------- timeseries


def test_timeseries_process_and_collate():
    proc = TimeseriesProcessor()
    data = [
        ([0.0, 1.5, 3.0], [[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]),
        ([2.0], [[5.0, 6.0]]),
        ([], []),
    ]
    proc.fit(data, key="labs")
    assert proc.num_features == 2
    items = [proc.process(v, key="labs", index=i) for i, v in enumerate(data)]
    times, values = items[0]
    assert times.tolist() == [0.0, 1.5, 3.0]
    assert values.dtype == torch.float32
    assert values.tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]
    assert items[2][1].shape == (0, 2)

    collated = proc.collate(items)
    assert collated.values.shape == (3, 3, 2)
    assert collated.values.dtype == torch.float32
    assert collated.values[1].tolist() == [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]]
    assert torch.all(collated.values[2] == 0)
    assert collated.mask.dtype == torch.bool
    # A real all-zero measurement (row 1 of sample 0) stays valid; only padding is masked.
    assert collated.mask.tolist() == [
        [True, True, True],
        [True, False, False],
        [False, False, False],
    ]
    assert collated.times.tolist() == [[0.0, 1.5, 3.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_timeseries_accepts_tensors():
    proc = TimeseriesProcessor()
    proc.fit([([0.0, 1.0], [[1.0], [2.0]])], key="labs")
    times, values = proc.process(
        (torch.tensor([0.0, 4.0]), torch.tensor([[7.0], [8.0]])), key="labs"
    )
    assert times.tolist() == [0.0, 4.0]
    assert values.tolist() == [[7.0], [8.0]]


def test_timeseries_wrong_width_at_process_names_sample_and_key():
    proc = TimeseriesProcessor()
    proc.fit([([0.0], [[1.0, 2.0]])], key="labs")
    with pytest.raises(ValueError, match=r"sample 7, feature 'labs'.*2 features"):
        proc.process(([0.0], [[1.0, 2.0, 3.0]]), key="labs", index=7)


# ----------------------------------------------------------------------------- stagenet


def test_stagenet_flat_with_times():
    proc = StageNetProcessor()
    data = [([0.0, 2.0, 5.0], ["b", "a", "b"]), ([1.0], ["c"])]
    proc.fit(data, key="stages")
    assert proc.nested is False
    assert proc.vocabulary.code_to_id == {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, "c": 4}
    items = [proc.process(v, key="stages", index=i) for i, v in enumerate(data)]
    times, ids = items[0]
    assert times.dtype == torch.float32
    assert times.tolist() == [0.0, 2.0, 5.0]
    assert ids.tolist() == [3, 2, 3]
    collated = proc.collate(items)
    assert collated.values.dtype == torch.long
    assert collated.values.tolist() == [[3, 2, 3], [4, 0, 0]]
    assert collated.times.dtype == torch.float32
    assert collated.times.tolist() == [[0.0, 2.0, 5.0], [1.0, 0.0, 0.0]]
    assert collated.mask is None


def test_stagenet_nested_with_times():
    proc = StageNetProcessor()
    data = [([0.0, 3.0], [["b"], ["a", "c"]]), ([1.0], [["c"]])]
    proc.fit(data, key="stages")
    assert proc.nested is True
    items = [proc.process(v, key="stages", index=i) for i, v in enumerate(data)]
    assert items[0][1].tolist() == [[3, 0], [2, 4]]
    collated = proc.collate(items)
    assert collated.values.shape == (2, 2, 2)
    assert collated.values.tolist() == [[[3, 0], [2, 4]], [[4, 0], [0, 0]]]
    assert collated.times.tolist() == [[0.0, 3.0], [1.0, 0.0]]
    assert collated.mask is None


@pytest.mark.parametrize(
    ("codes", "expected_ids"),
    [
        (["a", "b", "a"], [2, 3, 2]),
        ([["a"], ["b", "a"], ["b"]], [[2, 0], [3, 2], [3, 0]]),
    ],
    ids=["flat", "nested"],
)
def test_stagenet_times_none_gives_unit_steps(codes, expected_ids):
    proc = StageNetProcessor()
    proc.fit([(None, codes)], key="stages")
    times, ids = proc.process((None, codes), key="stages", index=0)
    assert times.dtype == torch.float32
    assert times.tolist() == [0.0, 1.0, 2.0]
    assert ids.tolist() == expected_ids
    collated = proc.collate([(times, ids), proc.process((None, codes[:1]), key="stages")])
    assert collated.times.tolist() == [[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]]


def test_stagenet_unknown_codes_map_to_unk():
    flat = StageNetProcessor()
    flat.fit([([0.0, 1.0], ["a", "b"])], key="s")
    assert flat.process(([0.0, 1.0], ["zz", "b"]), key="s")[1].tolist() == [UNK_ID, 3]
    nested = StageNetProcessor()
    nested.fit([([0.0], [["a", "b"]])], key="s")
    assert nested.process(([0.0], [["b", "zz"]]), key="s")[1].tolist() == [[3, UNK_ID]]


def test_stagenet_layout_must_match_fit():
    proc = StageNetProcessor()
    proc.fit([([0.0], ["a"])], key="s")
    with pytest.raises(TypeError, match=r"sample 4, feature 's'"):
        proc.process(([0.0], [["a"]]), key="s", index=4)


def test_stagenet_mixed_layouts_in_fit_name_samples_and_key():
    proc = StageNetProcessor()
    with pytest.raises(TypeError, match=r"feature 's'.*sample 0.*sample 1"):
        proc.fit([([0.0], ["a"]), ([0.0], [["a"]])], key="s")


# ----------------------------------------------------------------------------- tensor


def test_tensor_process_and_collate():
    proc = TensorProcessor()
    data = [[0.5, 1.0, -2.0], [0, 1, 2]]
    proc.fit(data, key="demo")
    assert proc.size == 3
    items = [proc.process(v, key="demo", index=i) for i, v in enumerate(data)]
    assert items[0].dtype == torch.float32
    assert items[1].tolist() == [0.0, 1.0, 2.0]
    collated = proc.collate(items)
    assert collated.values.shape == (2, 3)
    assert collated.values.tolist() == [[0.5, 1.0, -2.0], [0.0, 1.0, 2.0]]
    assert collated.mask is None
    assert collated.times is None


def test_tensor_wrong_length_at_process_names_sample_and_key():
    proc = TensorProcessor()
    proc.fit([[1.0, 2.0]], key="demo")
    with pytest.raises(ValueError, match=r"sample 3, feature 'demo'.*length 2"):
        proc.process([1.0, 2.0, 3.0], key="demo", index=3)


# ----------------------------------------------------------------------------- state round trip

ROUND_TRIP_CASES = {
    "sequence": (SequenceProcessor, [["b", "a"], ["c"], []], [["c", "zz", "a"], []]),
    "nested_sequence": (
        NestedSequenceProcessor,
        [[["b"], ["a", "c"]], [["c"]]],
        [[["c", "zz"], ["a"]], []],
    ),
    "timeseries": (
        TimeseriesProcessor,
        [([0.0, 1.0], [[1.0, 2.0], [3.0, 4.0]])],
        [([0.0, 2.0, 3.0], [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]), ([], [])],
    ),
    "stagenet_flat": (
        StageNetProcessor,
        [([0.0, 1.0], ["b", "a"])],
        [([0.0, 4.0, 5.0], ["a", "zz", "b"]), (None, ["a"])],
    ),
    "stagenet_nested": (
        StageNetProcessor,
        [(None, [["b"], ["a", "c"]])],
        [([0.0, 2.0], [["c", "a"], ["zz"]]), (None, [["b"]])],
    ),
    "tensor": (TensorProcessor, [[1.0, 2.0, 3.0]], [[0.0, -1.0, 2.5], [4.0, 5.0, 6.0]]),
}


def _as_tensors(processed):
    return list(processed) if isinstance(processed, tuple) else [processed]


@pytest.mark.parametrize("case", sorted(ROUND_TRIP_CASES))
def test_feature_state_dict_round_trip(case):
    cls, fit_values, new_values = ROUND_TRIP_CASES[case]
    fitted = cls()
    fitted.fit(fit_values, key="x")
    state = fitted.state_dict()
    # Plain data: survives JSON.
    restored = cls()
    restored.load_state_dict(json.loads(json.dumps(state)))
    assert restored.state_dict() == state
    for i, value in enumerate(new_values):
        a = _as_tensors(fitted.process(value, key="x", index=i))
        b = _as_tensors(restored.process(value, key="x", index=i))
        assert len(a) == len(b)
        for ta, tb in zip(a, b, strict=True):
            assert ta.dtype == tb.dtype
            assert torch.equal(ta, tb)
    items = [restored.process(v, key="x") for v in new_values]
    ca = fitted.collate([fitted.process(v, key="x") for v in new_values])
    cb = restored.collate(items)
    assert torch.equal(ca.values, cb.values)


def test_stagenet_state_keeps_nested_flag():
    proc = StageNetProcessor()
    proc.fit([(None, [["a"]])], key="s")
    restored = StageNetProcessor()
    restored.load_state_dict(proc.state_dict())
    assert restored.nested is True


def test_vocabulary_state_must_start_with_specials():
    with pytest.raises(ValueError, match="<pad>"):
        SequenceProcessor().load_state_dict({"vocabulary": ["a", "b"]})


# ----------------------------------------------------------------------------- labels


def test_binary_zero_one():
    proc = BinaryLabelProcessor()
    proc.fit([0, 1, 1, 0], key="label")
    assert proc.output_size == 1
    out = [proc.process(v, key="label", index=i) for i, v in enumerate([0, 1, 1])]
    assert all(t.shape == (1,) and t.dtype == torch.float32 for t in out)
    batch = proc.collate(out)
    assert batch.shape == (3, 1)
    assert batch.flatten().tolist() == [0.0, 1.0, 1.0]


def test_binary_accepts_bools_and_float_zero_one():
    proc = BinaryLabelProcessor()
    proc.fit([True, False, True], key="label")
    assert proc.process(True, key="label").tolist() == [1.0]
    assert proc.process(False, key="label").tolist() == [0.0]
    assert proc.process(1, key="label").tolist() == [1.0]
    assert proc.process(0.0, key="label").tolist() == [0.0]


def test_binary_two_strings_need_the_positive_class_named():
    # "low" / "high" sort alphabetically to high=0, low=1: the positive class would flip.
    with pytest.raises(ValueError, match=r"label 'risk'.*'high' and 'low'.*positive_class="):
        BinaryLabelProcessor().fit(["low", "high", "low"], key="risk")
    proc = BinaryLabelProcessor(positive_class="high")
    proc.fit(["low", "high", "low"], key="risk")
    assert proc.class_names == ["low", "high"]
    assert proc.process("high", key="risk").tolist() == [1.0]
    assert proc.process("low", key="risk").tolist() == [0.0]
    with pytest.raises(ValueError, match=r"sample 5, label 'risk'"):
        proc.process("maybe", key="risk", index=5)
    restored = BinaryLabelProcessor()
    restored.load_state_dict(proc.state_dict())
    assert restored.process("high", key="risk").tolist() == [1.0]
    assert restored.class_names == ["low", "high"]


@pytest.mark.parametrize(
    ("values", "positive", "names"),
    [
        (["no", "yes", "no"], "yes", ["no", "yes"]),
        (["Yes", "No"], "Yes", ["No", "Yes"]),
        (["true", "false"], "true", ["false", "true"]),
        (["1", "0"], "1", ["0", "1"]),
        ([True, False], True, ["0", "1"]),
        ([1, 0, 1], 1, ["0", "1"]),
    ],
)
def test_binary_obvious_pairs_need_no_name(values, positive, names):
    proc = BinaryLabelProcessor()
    proc.fit(values, key="y")
    assert proc.class_names == names
    negative = next(v for v in values if v != positive)
    assert proc.process(positive, key="y").tolist() == [1.0]
    assert proc.process(negative, key="y").tolist() == [0.0]


def test_binary_positive_class_must_be_one_of_the_values():
    with pytest.raises(ValueError, match=r"positive class 'medium' is not one of .*'high'"):
        BinaryLabelProcessor(positive_class="medium").fit(["low", "high"], key="risk")
    proc = BinaryLabelProcessor(positive_class="LOW")  # case is forgiven when unambiguous
    proc.fit(["low", "high"], key="risk")
    assert proc.class_names == ["high", "low"]


def test_create_sample_dataset_takes_the_positive_class():
    samples = [{"patient_id": f"p{i}", "codes": ["a"], "y": v} for i, v in enumerate("ab")]
    ds = create_sample_dataset(samples, {"codes": "sequence"}, {"y": "binary"}, positive_class="a")
    assert ds.schema.output_processors["y"].class_names == ["b", "a"]
    with pytest.raises(ValueError, match="positive_class='a' is for a binary label"):
        create_sample_dataset(
            samples, {"codes": "sequence"}, {"y": "multiclass"}, positive_class="a"
        )


def test_binary_three_values_raise():
    with pytest.raises(ValueError, match="'label'"):
        BinaryLabelProcessor().fit([0, 1, 2], key="label")
    with pytest.raises(ValueError, match="'label'"):
        BinaryLabelProcessor().fit(["a", "b", "c"], key="label")


def test_binary_value_unseen_at_fit_names_sample():
    proc = BinaryLabelProcessor()
    proc.fit([0, 1], key="label")
    with pytest.raises(ValueError, match=r"sample 2, label 'label'"):
        proc.process(2, key="label", index=2)


def test_multiclass_values_and_shapes():
    proc = MulticlassLabelProcessor()
    proc.fit(["b", "a", "c", "a"], key="cls")
    assert proc.output_size == 3
    assert proc.classes == ["a", "b", "c"]
    out = [proc.process(v, key="cls") for v in ["c", "a", "b"]]
    assert all(t.shape == () and t.dtype == torch.long for t in out)
    batch = proc.collate(out)
    assert batch.shape == (3,)
    assert batch.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match=r"sample 4, label 'cls'"):
        proc.process("d", key="cls", index=4)
    restored = MulticlassLabelProcessor()
    restored.load_state_dict(proc.state_dict())
    assert restored.process("b", key="cls").item() == 1


def test_multiclass_needs_two_classes():
    with pytest.raises(ValueError, match="'cls'"):
        MulticlassLabelProcessor().fit(["a", "a"], key="cls")


def test_multilabel_values_and_shapes():
    proc = MultilabelLabelProcessor()
    proc.fit([["y"], ["x", "z"], []], key="tags")
    assert proc.output_size == 3
    out = [proc.process(v, key="tags") for v in (["z", "x"], [], ["y"])]
    batch = proc.collate(out)
    assert batch.dtype == torch.float32
    assert batch.shape == (3, 3)
    assert batch.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match=r"sample 1, label 'tags'"):
        proc.process(["w"], key="tags", index=1)
    restored = MultilabelLabelProcessor()
    restored.load_state_dict(proc.state_dict())
    assert restored.process(["x"], key="tags").tolist() == [1.0, 0.0, 0.0]


def test_regression_values_and_shapes():
    proc = RegressionLabelProcessor()
    proc.fit([1.5, -2, 0.0], key="los")
    assert proc.output_size == 1
    out = [proc.process(v, key="los") for v in (1.5, -2, 3)]
    assert all(t.shape == (1,) and t.dtype == torch.float32 for t in out)
    batch = proc.collate(out)
    assert batch.shape == (3, 1)
    assert batch.flatten().tolist() == [1.5, -2.0, 3.0]
    with pytest.raises(TypeError, match=r"sample 2, label 'los'"):
        proc.process("long", key="los", index=2)
    with pytest.raises(ValueError, match=r"sample 3, label 'los'"):
        proc.process(math.nan, key="los", index=3)


# ----------------------------------------------------------------------------- factories


@pytest.mark.parametrize(
    "schema", ["sequence", "nested_sequence", "timeseries", "stagenet", "tensor"]
)
def test_make_feature_processor(schema):
    proc = make_feature_processor(schema, "x")
    assert proc.schema == schema


@pytest.mark.parametrize("schema", ["binary", "multiclass", "multilabel", "regression"])
def test_make_label_processor(schema):
    proc = make_label_processor(schema, "y")
    assert proc.schema == schema


def test_unknown_schema_strings_name_the_key():
    with pytest.raises(ValueError, match=r"feature 'codes'.*'seqence'"):
        make_feature_processor("seqence", "codes")
    with pytest.raises(ValueError, match=r"label 'y'.*'binray'"):
        make_label_processor("binray", "y")

"""ehrlens.core.files and ehrlens.core.jsonl: atomic writes and JSON Lines samples."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from ehrlens.core.files import atomic_write
from ehrlens.core.jsonl import read_jsonl, write_jsonl


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- atomic_write
def test_atomic_write_creates_the_file_and_its_folder_and_leaves_no_temp(tmp_path):
    target = tmp_path / "new" / "deeper" / "card.json"
    with atomic_write(target) as f:
        f.write('{"a": 1}')
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text() == '{"a": 1}'
    assert _names(target.parent) == ["card.json"]


def test_atomic_write_keeps_the_old_file_when_the_block_raises(tmp_path):
    target = tmp_path / "card.json"
    target.write_text("old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as f:
            f.write("half of the new cont")
            raise RuntimeError("boom")
    assert target.read_text() == "old content"
    assert _names(tmp_path) == ["card.json"]  # the temporary file is gone


def test_atomic_write_interrupted_first_write_leaves_nothing(tmp_path):
    target = tmp_path / "shard.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, "wb") as f:
            f.write(b"\x00\x01")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_atomic_write_binary_mode_and_replace(tmp_path):
    target = tmp_path / "blob.bin"
    target.write_bytes(b"previous")
    with atomic_write(target, "wb") as f:
        f.write(b"\x00\xffnew")
    assert target.read_bytes() == b"\x00\xffnew"
    assert _names(tmp_path) == ["blob.bin"]


def test_atomic_write_gives_the_usual_permissions_not_mkstemps_0600(tmp_path):
    target = tmp_path / "report.html"
    with atomic_write(target) as f:
        f.write("x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_atomic_write_text_is_utf8(tmp_path):
    target = tmp_path / "t.txt"
    with atomic_write(target) as f:
        f.write("café — ≥")
    assert target.read_bytes() == "café — ≥".encode()


# ----------------------------------------------------------------------------- JSON Lines
def test_write_then_read_jsonl_round_trip_with_tuples_arrays_and_tensors(tmp_path):
    samples = [
        {"patient_id": "P1", "codes": ("a", "b"), "labs": ([0.0, 1.5], [[1, 2], [3, 4]]), "y": 1},
        {
            "patient_id": "P2",
            "codes": ["c"],
            "labs": (np.array([0.0]), torch.tensor([[0.5, -1.0]])),
            "y": np.int64(0),
        },
    ]
    path = write_jsonl(samples, tmp_path / "s.jsonl")
    assert path == tmp_path / "s.jsonl"
    assert path.read_text().count("\n") == 2
    assert read_jsonl(path) == [
        {"patient_id": "P1", "codes": ["a", "b"], "labs": [[0.0, 1.5], [[1, 2], [3, 4]]], "y": 1},
        {"patient_id": "P2", "codes": ["c"], "labs": [[0.0], [[0.5, -1.0]]], "y": 0},
    ]
    assert _names(tmp_path) == ["s.jsonl"]


def test_read_jsonl_skips_blank_lines_but_counts_them_in_line_numbers(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"patient_id": "a"}\n\n   \n{"patient_id": "b"}\n{"patient_id": \n')
    with pytest.raises(ValueError) as error:
        read_jsonl(path)
    assert f"{path}:5: not valid JSON" in str(error.value)
    path.write_text('{"patient_id": "a"}\n\n{"patient_id": "b"}\n\n')
    assert read_jsonl(path) == [{"patient_id": "a"}, {"patient_id": "b"}]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "expected a JSON object (one patient), got list"),
        ('"P1"', "expected a JSON object (one patient), got str"),
        ('{"x": NaN}', "NaN is not allowed in samples"),
        ('{"x": [1, Infinity]}', "Infinity is not allowed in samples"),
        ('{"x": -Infinity}', "-Infinity is not allowed in samples"),
        ('{"x": 1', "not valid JSON"),
    ],
)
def test_read_jsonl_errors_give_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"patient_id": "ok"}\n' + line + "\n")
    with pytest.raises(ValueError) as error:
        read_jsonl(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


def test_read_jsonl_rejects_non_utf8_and_deep_nesting(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"patient_id": "a"}\n{"code": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not UTF-8 text"):
        read_jsonl(path)
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(ValueError, match=r"deep\.jsonl:1: JSON nested too deeply"):
        read_jsonl(deep)


def test_read_jsonl_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no samples"):
        read_jsonl(empty)
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such file"):
        read_jsonl(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, np.float64("nan"), np.array([1.0, np.nan]), torch.tensor([np.inf])],
    ids=["nan", "inf", "numpy-nan", "array-with-nan", "tensor-with-inf"],
)
def test_write_jsonl_rejects_nan_and_keeps_the_previous_file(tmp_path, bad):
    path = tmp_path / "s.jsonl"
    path.write_text('{"patient_id": "old"}\n')
    with pytest.raises(ValueError):
        write_jsonl([{"patient_id": "a", "x": 1.0}, {"patient_id": "b", "x": bad}], path)
    assert read_jsonl(path) == [{"patient_id": "old"}]
    assert _names(tmp_path) == ["s.jsonl"]


def test_written_jsonl_is_strict_json(tmp_path):
    path = write_jsonl([{"patient_id": 3, "v": (1, 2.5)}], tmp_path / "s.jsonl")
    (line,) = path.read_text().splitlines()
    assert json.loads(line) == {"patient_id": 3, "v": [1, 2.5]}


# ----------------------------------------------------------------------------- overwrite rule
def test_check_overwrite_refuses_existing_files_unless_told(tmp_path):
    from ehrlens.core.files import OutputConflictError, check_overwrite

    a, b, c = (tmp_path / n for n in ("a.json", "b.png", "c.csv"))
    check_overwrite([a, b], overwrite=False)  # nothing exists: fine
    a.write_text("mine")
    with pytest.raises(OutputConflictError) as error:
        check_overwrite([a, b], overwrite=False)
    assert str(error.value) == (f"{a} exists; pass --overwrite to replace it; nothing was changed")
    b.write_text("mine too")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")  # a dangling link counts
    with pytest.raises(OutputConflictError) as error:
        check_overwrite([a, b, c, tmp_path / "link"], overwrite=False)
    assert str(error.value) == (
        f"{a}, {b}, {tmp_path / 'link'} exist; pass --overwrite to replace them; "
        "nothing was changed"
    )
    many = [tmp_path / f"f{i}" for i in range(5)]
    for path in many:
        path.write_text("x")
    with pytest.raises(OutputConflictError, match=r"f2 and 2 more exist"):
        check_overwrite(many, overwrite=False)
    with pytest.raises(OutputConflictError, match=r"^custom$"):
        check_overwrite([a], overwrite=False, message="custom")
    check_overwrite([a, b, *many], overwrite=True)
    assert a.read_text() == "mine" and b.read_text() == "mine too"  # checking writes nothing


@pytest.mark.parametrize(
    ("index", "label", "expected"),
    [
        (1, "P000123", "0001-P000123.png"),
        (2, "../../escaped", "0002-escaped.png"),
        (3, "/abs/path/victim", "0003-abs_path_victim.png"),
        (4, "..", "0004.png"),
        (5, ".hidden", "0005-hidden.png"),
        (6, "a\\b:c*d?", "0006-a_b_c_d.png"),
        (7, "é/ü", "0007.png"),
        (12345, "x" * 60, "12345-" + "x" * 40 + ".png"),
    ],
)
def test_data_file_name_is_a_plain_name_inside_the_folder(tmp_path, index, label, expected):
    from ehrlens.core.files import data_file_name

    name = data_file_name(index, label, ".png")
    assert name == expected
    assert os.sep not in name and not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_data_file_name_rejects_a_negative_index():
    from ehrlens.core.files import data_file_name

    with pytest.raises(ValueError, match="index must be >= 0, got -1"):
        data_file_name(-1, "P1", ".png")

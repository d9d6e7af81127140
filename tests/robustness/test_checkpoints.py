"""Corrupt or mismatched checkpoints never load as a different model: ``BaseModel.load``
raises a ``ValueError`` naming the file and the field (format, version, class, schema,
vocabulary, hyperparameters, weights, checksum), and a file that loads is the model saved.

The checksum comes first, so most edits below are refused by it; the tests of the checks
behind it rewrite the file *with* a recomputed checksum (``rehash=True``), as a deliberate
edit or a faulty writer would, and check that the named check still refuses it.
"""

from __future__ import annotations

import random
import zipfile

import pytest
import torch
from _robustness_kit import MODELS, make_dataset, make_model

from ehrlens.models import BaseModel, StageAttentionNet, Transformer
from ehrlens.models.base import checkpoint_checksum


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


@pytest.fixture(scope="module", params=MODELS)
def saved(request, dataset, tmp_path_factory):
    model = make_model(request.param, dataset)
    path = model.save(tmp_path_factory.mktemp("ckpt") / f"{request.param}.pt")
    batch = dataset.collate(dataset.items)
    with torch.no_grad():
        logit = model(**batch)["logit"]
    return model, path, batch, logit


def _rewrite(path, tmp_path, name: str, rehash: bool = False, **changes):
    """A copy of the checkpoint with ``changes``; ``rehash`` recomputes its checksum."""
    checkpoint = {**torch.load(path, weights_only=True), **changes}
    if rehash:
        checkpoint["checksum"] = checkpoint_checksum(
            checkpoint["model_class"],
            checkpoint["hparams"],
            checkpoint["schema"],
            checkpoint["state_dict"],
        )
    out = tmp_path / name
    torch.save(checkpoint, out)
    return out


def _refused_unless_rehashed(path, tmp_path, name: str, **changes):
    """The edited file fails the checksum; the same edit with a new checksum is returned."""
    with pytest.raises(ValueError, match="checksum mismatch"):
        BaseModel.load(_rewrite(path, tmp_path, name, **changes))
    return _rewrite(path, tmp_path, name, rehash=True, **changes)


def _schema_with(checkpoint: dict, key: str, state: dict) -> dict:
    schema = {**checkpoint["schema"], "inputs": dict(checkpoint["schema"]["inputs"])}
    schema["inputs"][key] = {**schema["inputs"][key], "state": state}
    return schema


def test_an_intact_file_loads_the_same_model(saved):
    _, path, batch, logit = saved
    loaded = BaseModel.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(**batch)["logit"], logit)


@pytest.mark.parametrize("cut", [0, 1, 100, 0.5, -1])
def test_truncated_files_are_refused(saved, tmp_path, cut):
    _, path, _, _ = saved
    data = path.read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    broken = tmp_path / "cut.pt"
    broken.write_bytes(data[:end])
    with pytest.raises(ValueError, match=r"cut\.pt: not a readable ehrlens checkpoint"):
        BaseModel.load(broken)


def test_a_flipped_bit_in_any_weight_is_caught_by_the_checksum(saved, tmp_path):
    """torch.load does not verify the archive's CRCs: without the checksum, these load."""
    _, path, _, _ = saved
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        records = [i for i in archive.infolist() if "/data/" in i.filename and i.file_size]
    assert len(records) > 10
    for info in records[:: max(1, len(records) // 16)]:  # spread over the whole file
        # a local header is 30 bytes + name + extra field; the data follows
        with open(path, "rb") as f:
            f.seek(info.header_offset + 26)
            name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        start = info.header_offset + 30 + name_len + extra_len
        corrupt = bytearray(data)
        corrupt[start + info.file_size // 2] ^= 0x10
        broken = tmp_path / "flip.pt"
        broken.write_bytes(bytes(corrupt))
        with pytest.raises(ValueError, match=r"flip\.pt: checksum mismatch"):
            BaseModel.load(broken)


def test_random_byte_damage_never_loads_a_different_model(saved, tmp_path):
    _, path, batch, logit = saved
    data = path.read_bytes()
    rng = random.Random(0)
    outcomes = {"refused": 0, "same": 0}
    for trial in range(60):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            corrupt[rng.randrange(len(corrupt))] ^= rng.randint(1, 255)
        broken = tmp_path / f"damaged{trial}.pt"
        broken.write_bytes(bytes(corrupt))
        try:
            loaded = BaseModel.load(broken)
        except ValueError:
            outcomes["refused"] += 1
            continue
        with torch.no_grad():  # damage where nothing is read: the very same model
            assert torch.equal(loaded(**batch)["logit"], logit)
        outcomes["same"] += 1
    assert outcomes["refused"] > 0


@pytest.mark.parametrize("field", ["model_class", "hparams", "schema", "state_dict", "checksum"])
@pytest.mark.parametrize("value", [None, 3], ids=["missing", "wrong-type"])
def test_a_missing_or_mistyped_field_is_named(saved, tmp_path, field, value):
    _, path, _, _ = saved
    broken = _rewrite(path, tmp_path, "field.pt", **{field: value})
    with pytest.raises(ValueError, match=rf"field.pt: checkpoint field '{field}' is missing"):
        BaseModel.load(broken)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"format": "other"}, r"not an ehrlens model checkpoint"),
        ({"format_version": 99}, r"checkpoint format version 99 is not supported"),
        ({"model_class": "Nope"}, r"unknown model class 'Nope'"),
        ({"hparams": {"embedding_dim": 8, "not_a_parameter": 1}}, r"saved hyperparameters"),
    ],
)
def test_version_class_and_hyperparameters_are_checked(saved, tmp_path, changes, pattern):
    _, path, _, _ = saved
    with pytest.raises(ValueError, match=pattern):
        BaseModel.load(_rewrite(path, tmp_path, "meta.pt", rehash=True, **changes))


def test_the_saved_class_must_be_the_one_asked_for(saved):
    model, path, _, _ = saved
    other = StageAttentionNet if isinstance(model, Transformer) else Transformer
    with pytest.raises(ValueError, match=rf"holds a {type(model).__name__}, not a"):
        other.load(path)


def test_a_vocabulary_of_another_size_names_the_feature(saved, tmp_path):
    _, path, _, _ = saved
    checkpoint = torch.load(path, weights_only=True)
    state = dict(checkpoint["schema"]["inputs"]["visits"]["state"])
    state["vocabulary"] = [*state["vocabulary"], "EXTRA"]
    broken = _refused_unless_rehashed(
        path, tmp_path, "vocab.pt", schema=_schema_with(checkpoint, "visits", state)
    )
    with pytest.raises(ValueError, match=r"feature 'visits': the saved vocabulary has 11 ids"):
        BaseModel.load(broken)


def test_a_reordered_vocabulary_of_the_same_size_is_caught(saved, tmp_path):
    """Same size, so the weights fit, but every id would now mean another code."""
    _, path, _, _ = saved
    checkpoint = torch.load(path, weights_only=True)
    state = dict(checkpoint["schema"]["inputs"]["codes"]["state"])
    codes = list(state["vocabulary"])
    codes[2], codes[3] = codes[3], codes[2]
    state["vocabulary"] = codes
    broken = _rewrite(path, tmp_path, "swap.pt", schema=_schema_with(checkpoint, "codes", state))
    with pytest.raises(ValueError, match=r"swap\.pt: checksum mismatch"):
        BaseModel.load(broken)


@pytest.mark.parametrize(
    ("state_change", "pattern"),
    [
        ({"vocabulary": ["<pad>", "<unk>", "C0", "C0"]}, r"feature 'codes'.*repeated codes"),
        ({"vocabulary": ["C0", "<pad>", "<unk>"]}, r"feature 'codes'.*must start with"),
        ({"vocabulary": "C0"}, r"feature 'codes'.*list of codes"),
        ({"vocabulary": ["<pad>", "<unk>", 3]}, r"feature 'codes'.*strings"),
        ({"vocabulary": None}, r"feature 'codes'.*invalid"),
        ({"max_length": -2}, r"feature 'codes'.*max_length"),
    ],
)
def test_invalid_processor_state_names_the_feature(saved, tmp_path, state_change, pattern):
    _, path, _, _ = saved
    checkpoint = torch.load(path, weights_only=True)
    state = {**checkpoint["schema"]["inputs"]["codes"]["state"], **state_change}
    broken = _refused_unless_rehashed(
        path, tmp_path, "state.pt", schema=_schema_with(checkpoint, "codes", state)
    )
    with pytest.raises(ValueError, match=r"state\.pt: the saved schema is invalid: " + pattern):
        BaseModel.load(broken)


def test_an_unknown_schema_string_names_the_feature(saved, tmp_path):
    _, path, _, _ = saved
    checkpoint = torch.load(path, weights_only=True)
    schema = {**checkpoint["schema"], "inputs": dict(checkpoint["schema"]["inputs"])}
    schema["inputs"]["labs"] = {**schema["inputs"]["labs"], "schema": "time-series"}
    broken = _refused_unless_rehashed(path, tmp_path, "schema.pt", schema=schema)
    with pytest.raises(ValueError, match=r"feature 'labs': unknown input schema 'time-series'"):
        BaseModel.load(broken)


def test_edited_weights_of_the_right_shape_are_caught(saved, tmp_path):
    _, path, _, _ = saved
    checkpoint = torch.load(path, weights_only=True)
    weights = dict(checkpoint["state_dict"])
    weights["head.bias"] = weights["head.bias"] + 1.0
    with pytest.raises(ValueError, match=r"checksum mismatch"):
        BaseModel.load(_rewrite(path, tmp_path, "edit.pt", state_dict=weights))

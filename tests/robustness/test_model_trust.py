"""Item 7 of the hostile-input issue: what the checkpoint checksum guarantees, how to trust a
file, and hyperparameters validated before anything is built.

The checksum inside ``model.pt`` is unkeyed: it catches damage, and an editor can recompute
it. ``expected_sha256`` (``--model-sha256``) compares the file with a hash the user got from
a trusted source. Hyperparameters are checked against the saved weights' shapes before the
model is constructed, so ``embedding_dim=10**6`` in an edited file cannot allocate terabytes.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from _robustness_kit import MODELS, make_dataset, make_model, run_cli, save_tiny_model

from ehrlens.models import BaseModel, StageAttentionNet, Transformer
from ehrlens.models.base import checkpoint_checksum
from ehrlens.models.directory import load_model_dir, model_dir_sha256


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


@pytest.fixture(scope="module", params=MODELS)
def saved(request, dataset, tmp_path_factory):
    model = make_model(request.param, dataset)
    return model, model.save(tmp_path_factory.mktemp("trust") / "model.pt")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tamper(path, out, rehash: bool = True, **changes):
    """The checkpoint with ``changes``, its checksum recomputed as an editor would."""
    checkpoint = {**torch.load(path, weights_only=True), **changes}
    if rehash:
        checkpoint["checksum"] = checkpoint_checksum(
            checkpoint["model_class"], checkpoint["hparams"], checkpoint["schema"],
            checkpoint["state_dict"],
        )  # fmt: skip
    torch.save(checkpoint, out)
    return out


@pytest.fixture
def constructions(monkeypatch):
    """Devices the model classes are constructed on during the test ("meta": shapes only)."""
    devices = []
    for cls in (Transformer, StageAttentionNet):
        original = cls.__init__

        def spy(self, *args, _original=original, **kwargs):
            devices.append(torch.empty(0).device.type)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", spy)
    return devices


# ----------------------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("embedding_dim", r"embedding_dim=1000000 is larger than the largest dimension"),
        ("heads", r"heads=1000000 is larger than the largest dimension"),
    ],
)
def test_a_huge_size_is_refused_before_any_model_is_built(
    saved, tmp_path, constructions, name, pattern
):
    model, path = saved
    hparams = {**model.hparams, name: 10**6}
    edited = _tamper(path, tmp_path / "big.pt", hparams=hparams)
    with pytest.raises(ValueError, match=pattern):
        BaseModel.load(edited)
    assert constructions == []  # not even on the meta device


def test_a_huge_layer_count_is_refused_before_any_model_is_built(saved, tmp_path, constructions):
    model, path = saved
    key = "num_layers" if isinstance(model, Transformer) else "attention_layers"
    edited = _tamper(path, tmp_path / "deep.pt", hparams={**model.hparams, key: 10**6})
    n_tensors = len(model.state_dict())
    with pytest.raises(ValueError, match=rf"{key}=1000000 is larger than the number of saved "
                       rf"tensors \({n_tensors}\)"):  # fmt: skip
        BaseModel.load(edited)
    assert constructions == []


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"heads": 3}, r"embedding_dim 8 must be divisible by heads 3"),
        ({"heads": 0}, r"heads must be >= 1, got 0"),
        ({"embedding_dim": -4}, r"embedding_dim must be >= 1, got -4"),
        ({"embedding_dim": 8.0}, r"embedding_dim must be an int, got float"),
        ({"dropout": 2.0}, r"dropout must be in \[0, 1\), got 2.0"),
        ({"dropout": "0.1"}, r"dropout must be a number"),
    ],
)
def test_invalid_hyperparameters_are_refused_on_the_meta_device(
    saved, tmp_path, constructions, change, pattern
):
    model, path = saved
    edited = _tamper(path, tmp_path / "bad.pt", hparams={**model.hparams, **change})
    with pytest.raises(ValueError, match=r"cannot build a \w+ from the saved hyperparameters.*"
                       + pattern):  # fmt: skip
        BaseModel.load(edited)
    assert set(constructions) <= {"meta"}


def test_sizes_that_fit_but_disagree_with_the_weights_are_refused(saved, tmp_path, constructions):
    """embedding_dim 4 is a plausible size, but the saved weights are 8 wide."""
    model, path = saved
    edited = _tamper(path, tmp_path / "narrow.pt", hparams={**model.hparams, "embedding_dim": 4})
    with pytest.raises(ValueError, match=r"weights do not match .* has shape \(\d+(, \d+)*\), "
                       r"the hyperparameters give"):  # fmt: skip
        BaseModel.load(edited)
    assert constructions == ["meta"]


def test_an_intact_file_is_built_once_on_the_meta_device_then_for_real(saved, constructions):
    model, path = saved
    loaded = BaseModel.load(path)
    assert constructions == ["meta", "cpu"]
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_the_checksum_is_checked_before_the_hyperparameters(saved, tmp_path, constructions):
    model, path = saved
    edited = _tamper(
        path, tmp_path / "plain.pt", rehash=False, hparams={**model.hparams, "embedding_dim": 10**6}
    )
    with pytest.raises(ValueError, match=r"checksum mismatch.*expected_sha256"):
        BaseModel.load(edited)
    assert constructions == []


# ----------------------------------------------------------------------------- trust


def test_a_consistent_edit_passes_the_checksum_but_not_the_expected_sha256(saved, tmp_path):
    """What the checksum does not guarantee: an edited file with a recomputed checksum loads
    (here with two codes' vocabulary ids swapped); only a trusted SHA-256 refuses it."""
    _, path = saved
    trusted = _sha256(path)
    checkpoint = torch.load(path, weights_only=True)
    schema = {**checkpoint["schema"], "inputs": dict(checkpoint["schema"]["inputs"])}
    state = dict(schema["inputs"]["codes"]["state"])
    codes = list(state["vocabulary"])
    codes[2], codes[3] = codes[3], codes[2]
    entry = schema["inputs"]["codes"]
    schema["inputs"]["codes"] = {**entry, "state": {**state, "vocabulary": codes}}
    edited = _tamper(path, tmp_path / "model.pt", schema=schema)
    swapped = BaseModel.load(edited)  # the documented limit of the checksum
    assert list(swapped.schema.input_processors["codes"].vocabulary.code_to_id) == codes
    with pytest.raises(ValueError) as error:
        BaseModel.load(edited, expected_sha256=trusted)
    assert str(error.value) == (
        f"{edited}: SHA-256 {_sha256(edited)} is not the expected {trusted}; refusing to load "
        "a file other than the one you trust"
    )


def test_the_expected_sha256_of_the_file_loads_it_in_any_case(saved):
    model, path = saved
    digest = _sha256(path)
    for given in (digest, digest.upper(), f" {digest}\n"):
        loaded = BaseModel.load(path, expected_sha256=given)
        assert torch.equal(loaded.head.weight, model.head.weight)


@pytest.mark.parametrize("given", ["abc", "g" * 64, "", 12, "0" * 63])
def test_a_malformed_expected_sha256_is_refused(saved, given):
    _, path = saved
    with pytest.raises(ValueError, match=r"expected_sha256 must be 64 hexadecimal digits"):
        BaseModel.load(path, expected_sha256=given)


def test_model_directories_and_the_cli_verify_the_sha256(dataset, tmp_path):
    model_dir = save_tiny_model(tmp_path, dataset)
    digest = model_dir_sha256(model_dir)
    other = "0" * 64
    load_model_dir(model_dir, expected_sha256=digest)
    with pytest.raises(ValueError, match="is not the expected 0000"):
        load_model_dir(model_dir, expected_sha256=other)
    from _robustness_kit import make_samples

    from ehrlens.core.jsonl import write_jsonl

    data = write_jsonl(make_samples(4), tmp_path / "p.jsonl")
    common = ("--model", model_dir, "--data", data)
    wrong = run_cli("explain", *common, "--out", tmp_path / "a", "--model-sha256", other, "-q")
    assert wrong.exit_code == 1 and "is not the expected" in wrong.stderr
    assert not (tmp_path / "a").exists()
    bad = run_cli("evaluate", *common, "--model-sha256", "xyz", "-q")
    assert bad.exit_code == 2 and "64 digits" in bad.stderr
    good = run_cli("explain", *common, "--out", tmp_path / "b", "--model-sha256", digest, "-q")
    assert good.exit_code == 0, good.output
    assert "4 patients x 1 method(s)" in good.stdout

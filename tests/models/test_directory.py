"""Model directories: model.pt (weights + processors) and card.json, and their checks."""

from __future__ import annotations

import hashlib
import json
import platform

import pytest
import torch

import ehrlens
from ehrlens.core.files import file_sha256
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import model_fingerprint
from ehrlens.models import StageAttentionNet, Transformer
from ehrlens.models.directory import (
    CARD,
    WEIGHTS,
    IncompleteModelDirError,
    load_model_dir,
    save_model_dir,
)


@pytest.fixture(scope="module")
def dataset():
    cohort = generate_cohort(20, layout="nested", seed=1, include_demographics=True)
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


@pytest.fixture
def model(dataset):
    torch.manual_seed(0)
    return Transformer(dataset, embedding_dim=16, heads=2, num_layers=1, dropout=0.1)


def test_save_and_load_round_trip(tmp_path, dataset, model):
    card = {"training": {"epochs": 2}, "data": {"n_patients": 20}}
    path = save_model_dir(model, tmp_path / "runs" / "m", card)
    assert path == tmp_path / "runs" / "m"
    assert sorted(p.name for p in path.iterdir()) == [CARD, WEIGHTS]
    assert card == {"training": {"epochs": 2}, "data": {"n_patients": 20}}  # not mutated
    loaded, read_card = load_model_dir(path)
    assert type(loaded) is Transformer and loaded.training is False
    assert model_fingerprint(loaded) == model_fingerprint(model) == read_card["model_id"]
    assert read_card["training"] == {"epochs": 2} and read_card["data"] == {"n_patients": 20}
    assert read_card["model_class"] == "Transformer"
    assert read_card["hparams"] == dict(model.hparams)
    assert read_card["hparams"]["embedding_dim"] == 16
    assert read_card["input_schema"] == dataset.input_schema
    assert read_card["output_schema"] == {"label": "binary"}
    assert read_card["versions"] == {
        "ehrlens": ehrlens.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    assert read_card["created"].endswith("+00:00")
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(loaded(**batch)["y_prob"], model(**batch)["y_prob"])
    assert loaded.schema.input_schema == dataset.input_schema


def test_stagenet_model_round_trip(tmp_path):
    cohort = generate_cohort(12, layout="stagenet", seed=2)
    data = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    net = StageAttentionNet(data, embedding_dim=16, chunk_size=8, levels=2, heads=2)
    loaded, card = load_model_dir(save_model_dir(net, tmp_path / "s"))
    assert type(loaded) is StageAttentionNet
    assert card["model_class"] == "StageAttentionNet"
    assert card["model_id"] == model_fingerprint(net)


def test_card_and_weights_from_different_runs_are_refused(tmp_path, dataset, model):
    first = save_model_dir(model, tmp_path / "a")
    torch.manual_seed(1)
    other = Transformer(dataset, embedding_dim=16, heads=2, num_layers=1)
    second = save_model_dir(other, tmp_path / "b")
    (first / CARD).write_bytes((second / CARD).read_bytes())
    with pytest.raises(ValueError) as error:
        load_model_dir(first)
    assert str(error.value) == (
        f"{first}: {CARD} describes model {model_fingerprint(other)} but {WEIGHTS} holds model "
        f"{model_fingerprint(model)}; the two files come from different runs"
    )


def test_missing_and_unreadable_files(tmp_path, model):
    with pytest.raises(FileNotFoundError, match=r"not a model directory \(no model\.pt\)"):
        load_model_dir(tmp_path)
    path = save_model_dir(model, tmp_path / "m")
    (path / CARD).write_text("{broken")
    with pytest.raises(ValueError, match=r"card\.json: not valid JSON"):
        load_model_dir(path)
    (path / CARD).unlink()  # weights alone: a save that did not finish, refused
    with pytest.raises(IncompleteModelDirError) as error:
        load_model_dir(path)
    assert str(error.value) == (
        f"{path}: incomplete model directory (model.pt without card.json: the run that wrote it "
        "stopped before it finished); train again with --overwrite (or save_model_dir) to "
        "replace it, or delete the folder"
    )
    assert isinstance(error.value, ValueError)
    (path / CARD).write_text(json.dumps({"note": "no model_id"}))
    assert load_model_dir(path)[1] == {"note": "no model_id"}
    (path / WEIGHTS).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable ehrlens checkpoint"):
        load_model_dir(path)


def test_saving_again_replaces_both_files_atomically(tmp_path, dataset, model):
    path = save_model_dir(model, tmp_path / "m", {"training": {"epochs": 1}})
    torch.manual_seed(5)
    other = Transformer(dataset, embedding_dim=16, heads=2, num_layers=1)
    save_model_dir(other, path, {"training": {"epochs": 3}})
    loaded, card = load_model_dir(path)
    assert card["training"] == {"epochs": 3}
    assert model_fingerprint(loaded) == model_fingerprint(other) == card["model_id"]
    assert sorted(p.name for p in path.iterdir()) == [CARD, WEIGHTS]


def test_file_sha256(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # more than one 1 MiB block
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(b"")
    assert file_sha256(path) == hashlib.sha256(b"").hexdigest()


def test_a_save_over_a_model_that_stops_half_way_leaves_a_refused_folder(
    tmp_path, dataset, model, monkeypatch
):
    """New weights are never paired with the old card: the card goes first, comes back last."""
    path = save_model_dir(model, tmp_path / "m", {"training": {"epochs": 1}})
    torch.manual_seed(6)
    other = Transformer(dataset, embedding_dim=16, heads=2, num_layers=1)
    real_save = type(other).save

    def save_then_die(self, target):
        real_save(self, target)  # the new weights land...
        raise KeyboardInterrupt  # ...and the run stops before the card

    monkeypatch.setattr(type(other), "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_model_dir(other, path, {"training": {"epochs": 3}})
    assert sorted(p.name for p in path.iterdir()) == [WEIGHTS]
    with pytest.raises(IncompleteModelDirError, match="incomplete model directory"):
        load_model_dir(path)
    monkeypatch.undo()
    save_model_dir(other, path, {"training": {"epochs": 3}})  # saving again repairs it
    loaded, card = load_model_dir(path)
    assert card["training"] == {"epochs": 3}
    assert model_fingerprint(loaded) == model_fingerprint(other) == card["model_id"]

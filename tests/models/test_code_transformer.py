"""CodeTransformer (BEHRT-style): every code is a token, visits enter as embeddings.

Checked here: the token layout (real codes packed, padding never a token), the visit
embeddings really carry the visit structure, training with ``Trainer``, model directories,
event tables and ``ehrlens train --model code_transformer``. Interpretation (code-level
scores, the visit-level tie) is in ``tests/interpret/test_code_level.py``; the generic model
contract runs on it in ``test_models.py``.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ehrlens import Trainer
from ehrlens.cli.app import main
from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.data.events import from_events, to_events
from ehrlens.models import BaseModel, CodeTransformer, model_class
from ehrlens.models.code_transformer import token_layout
from ehrlens.models.directory import load_model_dir, save_model_dir


def nested_dataset(samples=None):
    samples = samples or [
        {"patient_id": "p01", "dx": [["I21.4", "I10"], ["E11.9"]], "y": 1},
        {"patient_id": "p02", "dx": [["I10"]], "y": 0},
        {"patient_id": "p03", "dx": [["E11.9", "I10", "I21.4"], ["I10"], ["E11.9"]], "y": 1},
    ]
    return create_sample_dataset(samples, {"dx": "nested_sequence"}, {"y": "binary"})


def tiny(dataset, seed=0, **kwargs):
    torch.manual_seed(seed)
    return CodeTransformer(
        dataset, **{"embedding_dim": 8, "heads": 2, "num_layers": 1, "dropout": 0.0, **kwargs}
    ).eval()


def test_token_layout_packs_real_codes_in_visit_then_code_order():
    real = torch.tensor([[False, True, True, False], [True, False, False, True]])
    layout = token_layout(real, torch.tensor([0, 0, 1, 1]), (2, 2, 2))
    assert layout.index.tolist() == [[1, 2], [0, 3]]
    assert layout.mask.tolist() == [[True, True], [True, True]]
    assert layout.visit.tolist() == [[0, 1], [0, 1]]
    short = token_layout(torch.tensor([[True, False], [False, False]]), torch.arange(2), (2, 2))
    assert short.index.shape == (2, 1) and short.mask.tolist() == [[True], [False]]


def test_one_token_per_real_code_and_cls():
    dataset = nested_dataset()
    model = tiny(dataset)
    batch = dataset.collate([dataset[i] for i in range(3)])
    model.set_attention_hooks(True, capture_gradients=False)
    try:
        model(**batch)
        ((attention, _),) = model.get_attention_layers()["dx"]
    finally:
        model.set_attention_hooks(False)
    # p03 has 5 codes, the most: [CLS] + 5 positions, whatever the [3, 3] padding of visits
    assert tuple(batch["dx"].shape) == (3, 3, 3)
    assert tuple(attention.shape) == (3, 2, 6, 6)
    counts = [3, 1, 5]
    for b, n in enumerate(counts):
        assert (attention[b, :, :, 1 + n :] == 0).all()  # padded tokens get no weight
        assert (attention[b, :, :, : 1 + n] > 0).all()


def test_visit_embeddings_carry_the_visit_structure():
    """The same codes split into different visits give a different output (a visit-blind
    bag of codes would not), and the order of codes inside a visit does not matter."""
    dataset = nested_dataset()
    model = tiny(dataset)

    def logit(visits):
        ds = create_sample_dataset(
            [{"patient_id": "x", "dx": visits, "y": 0}], schema=dataset.schema
        )
        return model(**ds.collate([ds[0]]))["logit"]

    together = logit([["I21.4", "I10", "E11.9"]])
    split = logit([["I21.4"], ["I10", "E11.9"]])
    shuffled = logit([["E11.9", "I21.4", "I10"]])
    assert not torch.allclose(together, split, atol=1e-4)
    torch.testing.assert_close(together, shuffled, atol=1e-6, rtol=0)


def test_times_enter_the_tokens_of_stagenet_features():
    samples = [
        {"patient_id": "a", "dx": ([0.0, 30.0], [["I10"], ["E11.9"]]), "y": 1},
        {"patient_id": "b", "dx": ([0.0, 400.0], [["I10"], ["E11.9"]]), "y": 0},
    ]
    dataset = create_sample_dataset(samples, {"dx": "stagenet"}, {"y": "binary"})
    model = tiny(dataset)
    logit = model(**dataset.collate([dataset[0], dataset[1]]))["logit"]
    assert not torch.allclose(logit[0], logit[1], atol=1e-5)  # only the times differ


def test_registered_in_the_model_table_with_the_transformer_hyperparameters():
    assert model_class("code_transformer") is CodeTransformer
    with pytest.raises(ValueError, match=r"CodeTransformer: embedding_dim 10 must be divisible"):
        CodeTransformer(nested_dataset(), embedding_dim=10, heads=4)
    with pytest.raises(ValueError, match=r"CodeTransformer: num_layers must be >= 1"):
        CodeTransformer(nested_dataset(), num_layers=0)


def test_trains_with_trainer_and_round_trips_through_a_model_directory(tmp_path):
    cohort = generate_cohort(n_patients=80, layout="nested", seed=2)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    model = tiny(dataset, embedding_dim=16)
    loader = get_dataloader(dataset, batch_size=16, shuffle=True, seed=0)
    batch = next(iter(get_dataloader(dataset, batch_size=80)))
    with torch.no_grad():
        before = float(model(**batch)["loss"])
    Trainer(model, seed=0).train(loader, epochs=4, lr=5e-3)
    model.eval()
    with torch.no_grad():
        after = float(model(**batch)["loss"])
    assert after < before
    save_model_dir(model, tmp_path / "m", card={"note": "test"})
    loaded, card = load_model_dir(tmp_path / "m")
    assert isinstance(loaded, CodeTransformer) and card["model_class"] == "CodeTransformer"
    torch.testing.assert_close(loaded(**batch)["logit"], model(**batch)["logit"])
    assert isinstance(BaseModel.load(tmp_path / "m" / "model.pt"), CodeTransformer)


def test_event_tables_give_the_same_scores_as_samples():
    cohort = generate_cohort(n_patients=12, layout="stagenet", seed=4)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    model = tiny(dataset)
    table = to_events(cohort.samples, cohort.input_schema)
    table["label"] = table["patient_id"].map({s["patient_id"]: s["label"] for s in cohort.samples})
    again = from_events(table, cohort.input_schema, label_key="label")
    from_table = create_sample_dataset(again, schema=dataset.schema)
    order = {s["patient_id"]: i for i, s in enumerate(again)}
    for i, sample in enumerate(cohort.samples[:4]):
        a = model(**dataset.collate([dataset[i]]))["logit"]
        b = model(**from_table.collate([from_table[order[sample["patient_id"]]]]))["logit"]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_cli_trains_a_code_transformer(tmp_path):
    cohort = generate_cohort(n_patients=40, layout="nested", seed=1)
    write_jsonl(cohort.samples, tmp_path / "samples.jsonl")
    schema = {"input_schema": cohort.input_schema, "output_schema": {"label": "binary"}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    args = [
        "train", "--data", tmp_path / "samples.jsonl", "--schema", tmp_path / "schema.json",
        "--out", tmp_path / "model", "--model", "code_transformer", "--epochs", "1",
        "--embedding-dim", "16", "--layers", "1", "--heads", "2", "-q",
    ]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    model, card = load_model_dir(tmp_path / "model")
    assert isinstance(model, CodeTransformer)
    assert card["hparams"]["num_layers"] == 1 and card["hparams"]["embedding_dim"] == 16

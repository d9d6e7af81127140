"""Transformer and StageAttentionNet: outputs, losses, input schemas, padding, save/load."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from ehrlens.data import create_sample_dataset
from ehrlens.models import BaseModel, StageAttentionNet, Transformer
from ehrlens.models.base import checkpoint_checksum

MODELS = ["Transformer", "StageAttentionNet", "CodeTransformer"]
MODES = ["binary", "multiclass", "multilabel", "regression"]
CODES = ["A", "B", "C", "D", "E", "F"]
ATOL = 1e-5

# Input variants: (schema string, how a sample's value is built).
VARIANTS = {
    "sequence": "sequence",
    "nested_sequence": "nested_sequence",
    "timeseries": "timeseries",
    "stagenet_flat": "stagenet",
    "stagenet_nested": "stagenet",
    "stagenet_no_times": "stagenet",
    "tensor": "tensor",
}


def _value(variant: str, length: int, rng: random.Random):
    times = sorted(round(rng.uniform(0.0, 30.0), 1) for _ in range(length))

    def visit():
        return [rng.choice(CODES) for _ in range(1 + rng.randrange(3))]

    if variant == "sequence":
        return [rng.choice(CODES) for _ in range(length)]
    if variant == "nested_sequence":
        return [visit() for _ in range(length)]
    if variant == "timeseries":
        return (times, [[rng.gauss(0.0, 1.0) for _ in range(3)] for _ in range(length)])
    if variant == "stagenet_flat":
        return (times, [rng.choice(CODES) for _ in range(length)])
    if variant == "stagenet_nested":
        return (times, [visit() for _ in range(length)])
    if variant == "stagenet_no_times":
        return (None, [visit() for _ in range(length)])
    if variant == "tensor":
        return [rng.gauss(0.0, 1.0) for _ in range(4)]
    raise AssertionError(variant)


def _label(mode: str, i: int):
    if mode == "binary":
        return i % 2
    if mode == "multiclass":
        return ["low", "mid", "high"][i % 3]
    if mode == "multilabel":
        return [["x"], ["y", "z"], [], ["x", "z"]][i % 4]
    return 0.5 * i - 1.0


def make_samples(variant: str = "sequence", mode: str = "binary", n: int = 6, seed: int = 0):
    """Patients with lengths 1, 2, 3, 4, 1, 2, ... of one feature ``x`` and a label ``y``."""
    rng = random.Random(seed)
    return [
        {"patient_id": f"p{i}", "x": _value(variant, 1 + i % 4, rng), "y": _label(mode, i)}
        for i in range(n)
    ]


def make_dataset(variant: str = "sequence", mode: str = "binary", n: int = 6, seed: int = 0):
    return create_sample_dataset(
        make_samples(variant, mode, n, seed), {"x": VARIANTS[variant]}, {"y": mode}
    )


def make_multi_feature_samples(n: int = 6, seed: int = 1):
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        sample = {"patient_id": f"m{i}", "y": i % 2}
        for j, variant in enumerate(VARIANTS):
            sample[variant] = _value(variant, 1 + (i + j) % 4, rng)
        samples.append(sample)
    return samples


MULTI_SCHEMA = dict(VARIANTS)


def forward(model, dataset, items):
    with torch.no_grad():
        return model(**dataset.collate(items))


# ----------------------------------------------------------------------------- output modes


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_output_keys_and_shapes(make_tiny_model, name, mode):
    ds = make_dataset("sequence", mode)
    model = make_tiny_model(name, ds).eval()
    expected_size = {"binary": 1, "multiclass": 3, "multilabel": 3, "regression": 1}[mode]
    assert model.mode == mode
    assert model.output_size == expected_size
    out = forward(model, ds, ds.items)
    assert set(out) == {"logit", "y_prob", "loss", "y_true"}
    assert out["logit"].shape == (6, expected_size)
    assert out["y_prob"].shape == (6, expected_size)
    assert out["loss"].shape == ()
    assert torch.isfinite(out["loss"])
    assert torch.equal(out["y_true"], ds.collate(ds.items)["y"])


def _reference_loss(mode: str, logit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if mode in ("binary", "multilabel"):
        y = y.float()
        per_entry = -(y * F.logsigmoid(logit) + (1 - y) * F.logsigmoid(-logit))
        return per_entry.mean()
    if mode == "multiclass":
        log_p = F.log_softmax(logit, dim=-1)
        return -log_p[torch.arange(len(y)), y.long()].mean()
    return ((logit - y.float()) ** 2).mean()


def _reference_prob(mode: str, logit: torch.Tensor) -> torch.Tensor:
    if mode in ("binary", "multilabel"):
        return 1.0 / (1.0 + torch.exp(-logit))
    if mode == "multiclass":
        e = torch.exp(logit - logit.max(dim=-1, keepdim=True).values)
        return e / e.sum(dim=-1, keepdim=True)
    return logit


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_loss_and_probabilities_match_independent_computation(make_tiny_model, name, mode):
    ds = make_dataset("nested_sequence", mode, n=8)
    model = make_tiny_model(name, ds).eval()
    batch = ds.collate(ds.items)
    out = forward(model, ds, ds.items)
    logit = out["logit"]
    expected_loss = _reference_loss(mode, logit, batch["y"])
    assert torch.allclose(out["loss"], expected_loss, atol=1e-6)
    assert torch.allclose(out["y_prob"], _reference_prob(mode, logit), atol=1e-6)
    if mode == "multiclass":
        assert torch.allclose(out["y_prob"].sum(-1), torch.ones(8), atol=1e-6)
    if mode == "regression":
        assert torch.equal(out["y_prob"], logit)


@pytest.mark.parametrize("name", MODELS)
def test_loss_backpropagates_to_every_embedding(make_tiny_model, name):
    ds = create_sample_dataset(make_multi_feature_samples(), MULTI_SCHEMA, {"y": "binary"})
    model = make_tiny_model(name, ds).train()
    model(**ds.collate(ds.items))["loss"].backward()
    for key in ds.feature_keys:
        grads = [p.grad for p in model.embeddings[key].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), key


# ----------------------------------------------------------------------------- input schemas


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", MODELS)
def test_every_input_schema_gives_batch_outputs(make_tiny_model, name, variant):
    ds = make_dataset(variant, "binary")
    model = make_tiny_model(name, ds).eval()
    out = forward(model, ds, ds.items)
    assert out["logit"].shape == (6, 1)
    assert torch.all(torch.isfinite(out["logit"]))
    assert torch.all((out["y_prob"] >= 0) & (out["y_prob"] <= 1))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", MODELS)
def test_batch_outputs_equal_single_sample_outputs(make_tiny_model, name, variant):
    ds = make_dataset(variant, "multiclass")
    model = make_tiny_model(name, ds).eval()
    batched = forward(model, ds, ds.items)["logit"]
    for i, item in enumerate(ds.items):
        alone = forward(model, ds, [item])["logit"]
        assert torch.allclose(batched[i : i + 1], alone, atol=ATOL), (i, batched[i], alone)


@pytest.mark.parametrize("name", MODELS)
def test_multi_feature_batch_equals_single_samples(make_tiny_model, name):
    ds = create_sample_dataset(make_multi_feature_samples(), MULTI_SCHEMA, {"y": "binary"})
    model = make_tiny_model(name, ds).eval()
    batched = forward(model, ds, ds.items)["logit"]
    assert batched.shape == (6, 1)
    for i, item in enumerate(ds.items):
        alone = forward(model, ds, [item])["logit"]
        assert torch.allclose(batched[i : i + 1], alone, atol=ATOL), i


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"tensor"}))
@pytest.mark.parametrize("name", MODELS)
def test_a_longer_sample_in_the_batch_does_not_change_outputs(make_tiny_model, name, variant):
    ds = make_dataset(variant, "binary")
    model = make_tiny_model(name, ds).eval()
    short, long = ds.items[0], ds.items[3]  # 1 step and 4 steps
    alone = forward(model, ds, [short])["logit"]
    padded_batch = ds.collate([short, long])
    assert padded_batch["x"].shape[1] == 4
    with torch.no_grad():
        padded = model(**padded_batch)["logit"]
    assert torch.allclose(padded[:1], alone, atol=ATOL)


def _pad_feature(values: torch.Tensor, variant: str, extra: int) -> torch.Tensor:
    if variant in ("sequence", "stagenet_flat"):
        return F.pad(values, (0, extra))  # [B, S]
    if variant == "timeseries":
        return F.pad(values, (0, 0, 0, extra))  # [B, T, F]: more steps only
    return F.pad(values, (0, extra, 0, extra))  # [B, T, C]: more steps and codes


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"tensor"}))
@pytest.mark.parametrize("name", MODELS)
def test_appending_extra_padding_does_not_change_outputs(make_tiny_model, name, variant):
    ds = make_dataset(variant, "regression")
    model = make_tiny_model(name, ds).eval()
    batch = ds.collate(ds.items)
    with torch.no_grad():
        reference = model(**batch)["logit"]
        padded = dict(batch)
        padded["x"] = _pad_feature(batch["x"], variant, extra=3)
        padded["masks"] = {k: F.pad(m, (0, 3), value=False) for k, m in batch["masks"].items()}
        padded["times"] = {k: F.pad(t, (0, 3)) for k, t in batch["times"].items()}
        assert padded["x"].shape[1] == batch["x"].shape[1] + 3
        out = model(**padded)["logit"]
    assert torch.allclose(out, reference, atol=ATOL)


# ----------------------------------------------------------------------------- empty code lists


def _samples_with_an_empty_patient():
    samples = make_multi_feature_samples(n=4)
    samples[2].update(
        {
            "sequence": [],
            "nested_sequence": [],
            "timeseries": ([], []),
            "stagenet_flat": ([], []),
            "stagenet_nested": ([], []),
            "stagenet_no_times": (None, []),
        }
    )
    samples[3]["nested_sequence"] = [[], ["A"]]  # an empty visit is also valid
    return samples


@pytest.mark.parametrize("name", MODELS)
def test_empty_code_list_gives_finite_outputs(make_tiny_model, name):
    ds = create_sample_dataset(_samples_with_an_empty_patient(), MULTI_SCHEMA, {"y": "binary"})
    model = make_tiny_model(name, ds).eval()
    out = forward(model, ds, ds.items)
    assert out["logit"].shape == (4, 1)
    assert torch.all(torch.isfinite(out["logit"]))
    assert torch.isfinite(out["loss"])
    # Training on such a batch gives finite gradients too.
    model.train()
    model(**ds.collate(ds.items))["loss"].backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_feature_empty_for_the_whole_batch_gives_finite_outputs(make_tiny_model, name):
    """A batch where every patient has [] for a feature (e.g. scoring one such patient)."""
    samples = [
        {"patient_id": "a", "codes": ["A", "B"], "other": ["C"], "y": 1},
        {"patient_id": "b", "codes": [], "other": ["B", "C"], "y": 0},
    ]
    ds = create_sample_dataset(samples, {"codes": "sequence", "other": "sequence"}, {"y": "binary"})
    model = make_tiny_model(name, ds).eval()
    batch = ds.collate([ds.items[1]])
    assert batch["codes"].shape == (1, 0)
    with torch.no_grad():
        out = model(**batch)
    assert out["logit"].shape == (1, 1)
    assert torch.all(torch.isfinite(out["logit"]))
    with torch.no_grad():
        both = model(**ds.collate(ds.items))["logit"]
    assert torch.allclose(both[1:], out["logit"], atol=ATOL)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", MODELS)
def test_missing_feature_in_batch_names_the_key(make_tiny_model, name):
    ds = make_dataset("sequence")
    model = make_tiny_model(name, ds)
    batch = ds.collate(ds.items)
    del batch["x"]
    with pytest.raises(ValueError, match="'x'"):
        model(**batch)


def test_model_needs_exactly_one_label_key():
    samples = [{"patient_id": "a", "x": ["A"], "y": 1, "z": 0.5}]
    ds = create_sample_dataset(samples, {"x": "sequence"}, {"y": "binary", "z": "regression"})
    with pytest.raises(ValueError, match="one label key"):
        Transformer(ds, embedding_dim=16, heads=2, num_layers=1)


def test_heads_must_divide_embedding_dim():
    with pytest.raises(ValueError, match="divisible"):
        Transformer(make_dataset(), embedding_dim=15, heads=2, num_layers=1)


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(make_tiny_model, tmp_path, name):
    ds = create_sample_dataset(make_multi_feature_samples(), MULTI_SCHEMA, {"y": "binary"})
    model = make_tiny_model(name, ds).eval()
    path = tmp_path / "nested" / "model.pt"
    assert model.save(path) == path
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left behind

    loaded = BaseModel.load(path)
    assert type(loaded) is type(model)
    assert not loaded.training
    assert loaded.hparams == model.hparams
    assert loaded.schema.state_dict() == model.schema.state_dict()
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    # New patients (with unseen codes) convert identically with the loaded schema.
    new_samples = make_multi_feature_samples(n=5, seed=99)
    new_samples[0]["sequence"] = ["UNSEEN", "A"]
    new_samples[1]["stagenet_nested"] = ([0.0, 2.0], [["A", "UNSEEN"], ["NEW"]])
    for s in new_samples:
        del s["y"]
    original = create_sample_dataset(new_samples, schema=model.schema)
    reloaded = create_sample_dataset(new_samples, schema=loaded.schema)
    a, b = original.collate(original.items), reloaded.collate(reloaded.items)
    assert a["sequence"][0].tolist()[0] == 1  # unseen -> <unk>
    for key in MULTI_SCHEMA:
        assert torch.equal(a[key], b[key]), key
    for group in ("masks", "times"):
        assert a[group].keys() == b[group].keys()
        for key in a[group]:
            assert torch.equal(a[group][key], b[group][key])
    with torch.no_grad():
        expected = model(**a)
        got = loaded(**b)
    assert "loss" not in got
    assert torch.equal(expected["y_prob"], got["y_prob"])
    assert torch.equal(expected["logit"], got["logit"])

    # The subclass' own load works; another subclass refuses the file.
    assert isinstance(type(model).load(path), type(model))
    other = StageAttentionNet if name == "Transformer" else Transformer
    with pytest.raises(ValueError, match=name):
        other.load(path)


def test_load_rejects_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint"):
        BaseModel.load(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="checkpoint"):
        BaseModel.load(other)
    with pytest.raises(ValueError, match="checkpoint"):
        BaseModel.load(tmp_path / "missing.pt")


def test_load_rejects_unsupported_version_and_unknown_class(make_tiny_model, tmp_path):
    model = make_tiny_model("Transformer", make_dataset())
    path = model.save(tmp_path / "m.pt")
    checkpoint = torch.load(path, weights_only=True)
    for version in (1, 3):  # 1: before checksums; 3: a future format
        torch.save({**checkpoint, "format_version": version}, tmp_path / "v.pt")
        with pytest.raises(ValueError, match=f"format version {version} is not supported"):
            BaseModel.load(tmp_path / "v.pt")
    torch.save({**checkpoint, "model_class": "NoSuchModel"}, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="NoSuchModel"):
        BaseModel.load(tmp_path / "unknown.pt")
    state = dict(checkpoint["state_dict"])
    state["head.weight"] = torch.zeros(1, 3)
    torch.save({**checkpoint, "state_dict": state}, tmp_path / "bad_weights.pt")
    with pytest.raises(ValueError, match="checksum mismatch"):
        BaseModel.load(tmp_path / "bad_weights.pt")
    # The same weights with a recomputed checksum are refused by the shape check.
    rehashed = checkpoint_checksum(
        "Transformer", checkpoint["hparams"], checkpoint["schema"], state
    )
    torch.save({**checkpoint, "state_dict": state, "checksum": rehashed}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"do not match.*'head.weight' has shape \(1, 3\)"):
        BaseModel.load(tmp_path / "bad.pt")


def test_stage_attention_mean_readout_reads_every_valid_step(tmp_path):
    """readout="mean": the head sees the mean of the valid steps' states, and the stated
    readout weights are uniform over valid steps (checked against a forward hook)."""
    from ehrlens.data.dataset import create_sample_dataset as _create
    from ehrlens.data.synthetic import generate_cohort as _cohort
    from ehrlens.models import BaseModel as _Base
    from ehrlens.models import StageAttentionNet as _Stage

    cohort = _cohort(n_patients=20, layout="stagenet", seed=4)
    dataset = _create(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = _Stage(dataset, embedding_dim=8, chunk_size=4, levels=2, heads=2, readout="mean")
    model.eval()
    batch = dataset.collate([dataset[i] for i in range(6)])
    key = model.feature_keys[0]
    states = {}
    handle = model.norms[key].register_forward_hook(lambda m, i, o: states.update(x=o))
    with torch.no_grad():
        out = model(**batch)["logit"]
    handle.remove()
    weights = model.get_readout_weights(**batch)[key]
    mask = model._step_mask(key, batch)
    for i in range(6):
        real = mask[i].nonzero()[:, 0]
        assert torch.allclose(weights[i][real], torch.full((len(real),), 1 / len(real)))
        assert float(weights[i].sum()) == pytest.approx(1.0)
    expected = torch.stack([states["x"][i][mask[i]].mean(dim=0) for i in range(6)])
    pooled = torch.bmm(weights[:, None, :], states["x"])[:, 0]
    assert torch.allclose(pooled, expected, atol=1e-6)
    model.save(tmp_path / "m.pt")
    loaded = _Base.load(tmp_path / "m.pt")
    assert loaded.hparams["readout"] == "mean"
    with torch.no_grad():
        assert torch.allclose(loaded(**batch)["logit"], out)
    with pytest.raises(ValueError, match="readout must be one of last, mean"):
        _Stage(dataset, readout="first")

"""The command-line options: method options (``-m name:option=value``),
case-insensitive method names, ``explain --overwrite``, no manifest left by a run that wrote
nothing, ``--target`` by class name, ``describe``, ``--on-bad-rows``, ``-q`` and the warning
for a split too small for its metrics."""

from __future__ import annotations

import json
import logging
import warnings

import click
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from _cli_invoke import invoke
from ehrlens.app.task import resolve_target, small_split_warning
from ehrlens.cli.methods import method_options, parse_methods
from ehrlens.cli.quiet import command_output
from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import create_sample_dataset
from ehrlens.data.events import EventTableWarning
from ehrlens.explain import explain_cohort
from ehrlens.explain.shards import MANIFEST
from ehrlens.interpret import AttentionRollout, BaseInterpreter, register_method
from ehrlens.interpret.registry import unregister_method
from ehrlens.models.directory import load_model_dir

TINY = ["--epochs", "1", "--embedding-dim", "8", "--layers", "1", "--heads", "2", "-q"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic cohort of 60 patients and a 1-epoch model (small: scores are compared
    between runs, not judged)."""
    root = tmp_path_factory.mktemp("options")
    invoke("synthetic", root / "data", "--patients", 60)
    data = root / "data"
    invoke(
        "train", "--data", data / "samples.jsonl", "--schema", data / "schema.json",
        "--out", root / "model", *TINY,
    )  # fmt: skip
    return data, root / "model"


# ---- -m NAME:OPTION=VALUE ------------------------------------------------------------------


def test_method_options_are_parsed_as_the_types_of_their_defaults():
    assert parse_methods(("rollout:head_fusion=max,flow:max_seq_len=512",)) == {
        "rollout": {"head_fusion": "max"},
        "flow": {"max_seq_len": 512},
    }
    assert parse_methods(
        ("rollout:head_fusion=min,discard_ratio=0.25:low_memory=yes", "flow:normalize=per_feature")
    ) == {
        "rollout": {"head_fusion": "min", "discard_ratio": 0.25, "low_memory": True},
        "flow": {"normalize": "per_feature"},
    }
    # default None: none, an integer, or text
    assert parse_methods(("integrated_gradients:internal_batch_size=none",)) == {
        "integrated_gradients": {"internal_batch_size": None}
    }
    # default "auto": the words of a boolean are booleans, other text stays text
    assert parse_methods(("rollout:low_memory=false",)) == {"rollout": {"low_memory": False}}
    assert parse_methods(("rollout:low_memory=auto",)) == {"rollout": {"low_memory": "auto"}}
    assert parse_methods(("integrated_gradients:internal_batch_size=4",)) == {
        "integrated_gradients": {"internal_batch_size": 4}
    }
    assert parse_methods(()) == {"rollout": {}}


def test_method_and_option_names_are_case_insensitive_and_methods_listed_once():
    assert parse_methods(("ROLLOUT:Head_Fusion=max", "Chefer,rollout")) == {
        "rollout": {"head_fusion": "max"},
        "chefer": {},
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("rollut", "unknown method 'rollut'; choose from rollout, flow, chefer"),
        (
            "rollout:head_fuson=max",
            "-m rollout:head_fuson=max: rollout has no option 'head_fuson' (its options: "
            "head_fusion, discard_ratio, low_memory, block_rows)",
        ),
        ("flow:max_seq_len=big", "-m flow:max_seq_len=big: max_seq_len of flow is an integer"),
        ("rollout:discard_ratio=x", "discard_ratio of rollout is a number, got 'x'"),
        ("head_fusion=max", "option 'head_fusion=max' comes before any method name"),
        ("rollout:head_fusion", "-m rollout:head_fusion: expected OPTION=VALUE"),
        ("chefer:seed=1", "chefer has no option 'seed' (its options: none)"),
    ],
)
def test_a_bad_method_option_is_named(value, message):
    with pytest.raises(click.BadParameter) as error:
        parse_methods((value,))
    assert message in error.value.format_message()


def test_one_method_with_two_sets_of_options_is_refused():
    with pytest.raises(click.BadParameter, match="method 'rollout' is given twice"):
        parse_methods(("rollout:head_fusion=max", "rollout:head_fusion=min"))


def test_the_seed_goes_to_methods_that_take_one_unless_set():
    assert method_options({"random": {}, "rollout": {}}, seed=7) == {
        "random": {"seed": 7},
        "rollout": {},
    }
    assert method_options({"random": {"seed": 3}}, seed=7) == {"random": {"seed": 3}}


def test_explain_applies_method_options(trained, tmp_path):
    data, model_dir = trained
    out = tmp_path / "attr"
    invoke(
        "explain", "--model", model_dir, "--data", data / "samples.jsonl",
        "-m", "Rollout:head_fusion=max,discard_ratio=0.5", "--out", out, "-q",
    )  # fmt: skip
    settings = json.loads((out / MANIFEST).read_text())["settings"]["methods"]
    assert settings["rollout"][1]["head_fusion"] == "max"
    assert settings["rollout"][1]["discard_ratio"] == 0.5
    got = pd.concat([pq.read_table(p).to_pandas() for p in sorted(out.glob("part-*.parquet"))])
    # the same rows as the library run with an explicitly built interpreter
    model, card = load_model_dir(model_dir)
    samples = [json.loads(line) for line in (data / "samples.jsonl").read_text().splitlines()]
    dataset = create_sample_dataset(samples, schema=model.schema)
    built = AttentionRollout(model, head_fusion="max", discard_ratio=0.5)
    expected = explain_cohort(
        model, dataset, {"rollout": built}, model_id=card["model_id"]
    ).to_frame()
    assert got["score"].tolist() == pytest.approx(expected["score"].tolist(), abs=1e-6)
    plain = explain_cohort(model, dataset, ["rollout"], model_id=card["model_id"]).to_frame()
    assert not torch.allclose(
        torch.tensor(plain["score"].to_numpy()), torch.tensor(expected["score"].to_numpy())
    )  # the options changed the scores


def test_a_value_the_method_refuses_is_bad_usage_and_nothing_is_written(trained, tmp_path):
    data, model_dir = trained
    out = tmp_path / "attr"
    result = invoke(
        "explain", "--model", model_dir, "--data", data / "samples.jsonl",
        "-m", "rollout:head_fusion=median", "--out", out, expect=2,
    )  # fmt: skip
    assert "-m rollout:head_fusion=median: head_fusion must be one of" in result.stderr
    assert not out.exists()
    result = invoke(
        "evaluate", "--model", model_dir, "--data", data / "samples.jsonl",
        "-m", "rollout:discard_ratio=1.5", expect=2,
    )  # fmt: skip
    assert "-m rollout:discard_ratio=1.5: discard_ratio must be in [0, 1)" in result.stderr
    result = invoke(
        "evaluate", "--model", model_dir, "--data", data / "samples.jsonl",
        "-m", "rollout:low_memory=maybe", expect=2,
    )  # fmt: skip
    assert "-m rollout:low_memory=maybe: low_memory must be 'auto', True or False" in (
        result.stderr
    )


def test_the_help_lists_each_methods_options():
    text = " ".join(invoke("explain", "--help").stdout.split())
    assert "options: head_fusion=mean, discard_ratio=0.0, low_memory=auto" in text
    assert "-m rollout:head_fusion=max,flow:max_seq_len=512" in text


# ---- explain --overwrite, and no manifest from a run that wrote nothing ---------------------


class FailingMethod(BaseInterpreter):
    """Fails on every batch: a run with it writes no shard."""

    name = "always_fails"
    gradient_free = True
    needs = ()
    summary = "raises on every batch"

    def attribute(self, target_class_idx=None, **batch):
        raise ValueError("always_fails: no scores for this batch")


@pytest.fixture
def failing_method():
    register_method(FailingMethod)
    yield
    unregister_method("always_fails")


def test_a_failed_run_leaves_no_manifest_so_a_corrected_run_proceeds(
    trained, tmp_path, failing_method
):
    data, model_dir = trained
    out = tmp_path / "attr"
    args = ["explain", "--model", model_dir, "--data", data / "samples.jsonl", "--out", out, "-q"]
    result = invoke(*args, "-m", "always_fails", expect=1)
    assert "always_fails: no scores for this batch" in result.stderr
    assert not out.exists()  # created by the run, removed with its manifest
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    invoke(*args, "-m", "always_fails", expect=1)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # a folder of the user's stays
    invoke(*args, "-m", "rollout")  # not refused as a different run
    assert json.loads((out / MANIFEST).read_text())["complete"] is True


def test_a_resumed_run_that_fails_keeps_its_manifest(trained, tmp_path, failing_method):
    data, model_dir = trained
    out = tmp_path / "attr"
    args = ["explain", "--model", model_dir, "--data", data / "samples.jsonl", "--out", out, "-q"]
    invoke(*args, "--shard-size", 20)
    (out / "part-00002.parquet").unlink()  # an interrupted run's folder
    invoke(*args, "--shard-size", 20, "-m", "always_fails", expect=3)  # another run: refused
    assert (out / MANIFEST).exists() and len(list(out.glob("part-*.parquet"))) == 2


def test_overwrite_replaces_a_previous_run_and_keeps_other_files(trained, tmp_path):
    data, model_dir = trained
    out = tmp_path / "attr"
    args = ["explain", "--model", model_dir, "--data", data / "samples.jsonl", "--out", out, "-q"]
    invoke(*args, "-m", "rollout", "--shard-size", 20)
    assert len(list(out.glob("part-*.parquet"))) == 3
    (out / "notes.txt").write_text("mine")
    refused = invoke(*args, "-m", "chefer", expect=3)
    assert "different run" in refused.stderr and "--overwrite" in refused.stderr
    invoke(*args, "-m", "chefer", "--overwrite")
    record = json.loads((out / MANIFEST).read_text())
    assert list(record["settings"]["methods"]) == ["chefer"] and record["shards"] == 1
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "notes.txt", "part-00000.parquet"]
    assert (out / "notes.txt").read_text() == "mine"
    frame = pq.read_table(out / "part-00000.parquet").to_pandas()
    assert set(frame["method"]) == {"chefer"}


def test_overwrite_leaves_shards_without_a_manifest_alone(trained, tmp_path):
    data, model_dir = trained
    out = tmp_path / "attr"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"not ours")
    args = ["explain", "--model", model_dir, "--data", data / "samples.jsonl", "--out", out]
    result = invoke(*args, "--overwrite", "-q", expect=3)
    assert "already holds shard files" in result.stderr
    assert (out / "part-00000.parquet").read_bytes() == b"not ours"


# ---- --target by class name, classes in the card, describe ----------------------------------


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    """60 patients whose class (low / medium / high) follows their first code."""
    root = tmp_path_factory.mktemp("multiclass")
    classes = ["low", "medium", "high"]
    samples = [
        {
            "patient_id": f"p{i:03d}",
            "dx": [f"c{i % 3}", f"n{i % 7}", f"n{i % 5}"],
            "severity": classes[i % 3],
        }
        for i in range(60)
    ]
    write_jsonl(samples, root / "samples.jsonl")
    schema = {"input_schema": {"dx": "sequence"}, "output_schema": {"severity": "multiclass"}}
    (root / "schema.json").write_text(json.dumps(schema))
    trained = invoke(
        "train", "--data", root / "samples.jsonl", "--schema", root / "schema.json",
        "--out", root / "model", *TINY,
    )  # fmt: skip
    return root, trained


def test_the_card_records_the_class_order_and_train_prints_it(multiclass):
    root, trained = multiclass
    card = json.loads((root / "model" / "card.json").read_text())
    # sorted class names: the order of the model's outputs
    assert card["task"] == {
        "label": "severity",
        "mode": "multiclass",
        "classes": ["high", "low", "medium"],
        "positive_class": None,
    }
    assert "classes (output order): 0: high, 1: low, 2: medium" in trained.stdout


def test_target_by_name_equals_target_by_index(multiclass, tmp_path):
    root, _ = multiclass
    args = ["explain", "--model", root / "model", "--data", root / "samples.jsonl", "-q"]
    args += ["-m", "chefer"]  # depends on the class explained
    invoke(*args, "--target", "Medium", "--out", tmp_path / "by_name")
    invoke(*args, "--target", "2", "--out", tmp_path / "by_index")
    invoke(*args, "--target", "0", "--out", tmp_path / "other")
    read = lambda name: pq.read_table(tmp_path / name / "part-00000.parquet").to_pandas()  # noqa: E731
    assert read("by_name")["score"].tolist() == read("by_index")["score"].tolist()
    assert read("by_name")["score"].tolist() != read("other")["score"].tolist()
    settings = json.loads((tmp_path / "by_name" / MANIFEST).read_text())["settings"]
    assert settings["target_class_idx"] == 2


def test_an_unknown_target_lists_the_classes(multiclass, tmp_path):
    root, _ = multiclass
    args = ["explain", "--model", root / "model", "--data", root / "samples.jsonl"]
    result = invoke(*args, "--target", "severe", "--out", tmp_path / "a", expect=2)  # usage
    assert (
        "--target 'severe' is not a class of this model; classes in output order: 0: high, "
        "1: low, 2: medium" in result.stderr
    )
    result = invoke(*args, "--target", "3", "--out", tmp_path / "a", expect=2)
    assert "--target 3 is out of range" in result.stderr
    assert not (tmp_path / "a").exists()


def test_resolve_target():
    classes = ["high", "low", "medium"]
    assert resolve_target(None, classes) is None
    assert [resolve_target(v, classes) for v in ("high", "LOW", "2", 1)] == [0, 1, 2, 1]
    assert resolve_target("5", None) == 5  # no recorded classes: an index as before
    assert resolve_target("b", ["a", "b", "B"]) == 1  # exact match before case folding
    with pytest.raises(ValueError, match="not a class"):
        resolve_target("x", ["a", "A"])  # folded match is ambiguous


def test_describe_shows_classes_data_and_metric_directions(multiclass):
    root, _ = multiclass
    text = invoke("describe", "--model", root / "model").stdout
    assert "label      severity (multiclass)" in text
    assert "classes    0: high, 1: low, 2: medium" in text
    assert "data       60 patients (train 42, val 9, test 9)" in text
    assert "(higher is better)" in text and "loss" in text
    assert "warning: the test split holds 9 patient(s)" in text
    summary = json.loads(invoke("describe", "--model", root / "model", "--json").stdout)
    assert summary["task"]["classes"] == ["high", "low", "medium"]
    assert summary["features"] == {"dx": "sequence"}


def test_describe_reads_classes_of_a_card_without_them(multiclass, tmp_path):
    root, _ = multiclass
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(root / "model", copy)
    card = json.loads((copy / "card.json").read_text())
    del card["task"]
    (copy / "card.json").write_text(json.dumps(card))
    text = invoke("describe", "--model", copy).stdout
    assert "classes    0: high, 1: low, 2: medium" in text


# ---- the split-size warning -----------------------------------------------------------------


def test_small_split_warning():
    assert small_split_warning("test", [0.0, 1.0], ["roc_auc"], ["0", "1"]) == (
        "the test split holds 2 patient(s) (1 of class 0, 1 of class 1): its roc_auc are "
        "unreliable (wanted at least 30 patients and 10 of each class); train on more patients"
    )
    balanced = [torch.tensor([float(i % 2)]) for i in range(40)]
    assert small_split_warning("test", balanced, ["roc_auc"], ["no", "yes"]) is None
    skewed = [torch.tensor(0)] * 35 + [torch.tensor(1)] * 5
    message = small_split_warning("test", skewed, ["accuracy"], ["a", "b", "c"])
    assert "(35 of class a, 5 of class b, 0 of class c)" in message
    assert small_split_warning("test", [0.5] * 40, ["mse"]) is None  # regression: size only


def test_train_warns_when_the_test_split_is_too_small(trained):
    _, model_dir = trained
    card = json.loads((model_dir / "card.json").read_text())
    assert len(card["warnings"]) == 1
    assert card["warnings"][0].startswith("the test split holds 9 patient(s)")


def test_evaluate_warns_on_a_small_split(trained):
    data, model_dir = trained
    result = invoke(
        "evaluate", "--model", model_dir, "--data", data / "samples.jsonl", "--split", "test",
        "--bootstrap", 10, "-q",
    )  # fmt: skip
    assert "warning: 9 patient(s) in --split test" in result.stderr


# ---- --on-bad-rows --------------------------------------------------------------------------


def test_on_bad_rows_skip_drops_bad_event_rows_with_a_warning(trained, tmp_path):
    data, model_dir = trained
    events = pd.read_parquet(data / "events.parquet")
    bad = events.iloc[:1].copy()
    bad["time"] = None  # a row without a time
    table = tmp_path / "events.parquet"
    pd.concat([events, bad], ignore_index=True).to_parquet(table)
    args = ["explain", "--model", model_dir, "--data", table, "--labels", data / "labels.csv"]
    refused = invoke(*args, "--out", tmp_path / "a", expect=1)
    assert "1 bad row(s)" in refused.stderr and "pass --on-bad-rows skip" in refused.stderr
    assert not (tmp_path / "a").exists()
    done = invoke(*args, "--out", tmp_path / "b", "--on-bad-rows", "skip", "-q")
    assert "warning: event table: 1 bad row(s)" in done.stderr and "skipped" in done.stderr


# ---- -q -------------------------------------------------------------------------------------


def test_quiet_drops_other_libraries_warnings_and_keeps_ehrlens_ones(capsys):
    def emit():
        warnings.warn("sklearn says", UserWarning, stacklevel=1)
        warnings.warn("3 bad rows; skipped", EventTableWarning, stacklevel=1)

    ray_logger = logging.getLogger("ray")
    before = ray_logger.level
    with command_output(quiet=True):
        emit()
        assert ray_logger.level == logging.ERROR
    assert ray_logger.level == before
    err = capsys.readouterr().err
    assert err == "warning: 3 bad rows; skipped\n"
    with pytest.warns(UserWarning, match="sklearn says"), command_output(quiet=False):
        emit()  # shown as Python shows it (here: recorded by pytest)
    assert capsys.readouterr().err == "warning: 3 bad rows; skipped\n"


def test_quiet_train_prints_no_library_warnings(trained, tmp_path):
    data, _ = trained
    args = ["train", "--data", data / "samples.jsonl", "--schema", data / "schema.json"]
    result = invoke(*args, "--out", tmp_path / "m", *TINY)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("warning: the test split") for line in lines), lines


def test_quiet_ray_engine_starts_ray_logging_errors_only(monkeypatch):
    from ehrlens.explain import ray_engine

    calls = []

    class FakeRay:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(ray_engine, "_ray", lambda: FakeRay())
    ray_engine.init_ray(num_cpus=2, quiet=True)
    ray_engine.init_ray(num_cpus=2)
    assert calls[0]["logging_level"] == logging.ERROR and calls[0]["log_to_driver"] is False
    assert "logging_level" not in calls[1]
    # A local runtime's workers run at the caller's priority, not Ray's niceness 15.
    assert all(call["_system_config"] == {"worker_niceness": 0} for call in calls)


def test_new_options_are_in_the_help():
    explain = " ".join(invoke("explain", "--help").stdout.split())
    for option in ("--overwrite", "--on-bad-rows", "--target CLASS", "ehrlens describe"):
        assert option in explain
    assert "--on-bad-rows" in invoke("train", "--help").stdout
    assert "--on-bad-rows" in invoke("evaluate", "--help").stdout
    assert "describe" in invoke("--help").stdout

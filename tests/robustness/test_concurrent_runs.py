"""One writer per output: concurrent runs into one folder, with real processes.

Issue "Hostile input, concurrent runs and wrong files", item 4: two ``explain`` runs with
different methods into one folder both returned "ok" (the manifest named one method, the
folder held rows of both); two ``train --out`` runs both exited 0, the second model replacing
the first. Now the second writer exits 3 naming the holder, and the folder holds one run.
"""

from __future__ import annotations

import json
import signal
import socket
import time

import pandas as pd
import pytest
from _cli_kit import TINY_TRAIN, invoke, python, run, spawn

from ehrlens.core.locks import lock_path, output_lock
from ehrlens.explain import read_attributions
from ehrlens.models.directory import load_model_dir

pytestmark = pytest.mark.slow

EXPLAIN = ["--shard-size", 10, "--batch-size", 10, "-q"]


def _explain_args(cohort, method: str, out) -> list:
    return [
        "explain", "--model", cohort / "model", "--data", cohort / "data" / "samples.jsonl",
        "-m", method, "--out", out, *EXPLAIN,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def references(cli_cohort, tmp_path_factory):
    """Each method's table from a run alone."""
    root = tmp_path_factory.mktemp("alone")
    out = {}
    for method in ("rollout", "chefer"):
        invoke(*_explain_args(cli_cohort, method, root / method))
        out[method] = read_attributions(root / method)
    return out


def _same_table(frame, reference) -> None:
    """Exactly the reference's rows and scores; the model's probabilities stored with them to
    float32 rounding (they come from a forward pass whose batches the runs pad differently)."""
    probabilities = ["predicted_probability", "explained_probability"]
    pd.testing.assert_frame_equal(
        frame.drop(columns=probabilities), reference.drop(columns=probabilities), check_exact=True
    )
    pd.testing.assert_frame_equal(frame[probabilities], reference[probabilities], atol=1e-6)


def _wait_for(path, process, timeout: float = 120) -> None:
    """Wait until ``process`` has created ``path``; fail if it ends first or takes too long."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.01)


def _finish(process, timeout: float = 300):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


@pytest.mark.parametrize("attempt", range(3))
def test_item_4_two_explain_runs_into_one_folder(cli_cohort, references, tmp_path, attempt):
    """Started together; exactly one writes the folder, the other exits 3 and changes nothing."""
    out = tmp_path / "attr"
    first = spawn(*_explain_args(cli_cohort, "rollout", out))
    second = spawn(*_explain_args(cli_cohort, "chefer", out))
    results = {"rollout": _finish(first), "chefer": _finish(second)}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 3], results
    winner = next(m for m, (code, _, _) in results.items() if code == 0)
    loser = next(m for m in results if m != winner)
    message = results[loser][2]
    assert message.startswith("error: "), message
    assert ("is being written by another ehrlens run (pid" in message) or (
        "holds attributions of a different run" in message
    ), message
    manifest = json.loads((out / "_ehrlens_run.json").read_text())
    assert sorted(manifest["settings"]["methods"]) == [winner] and manifest["complete"]
    frame = read_attributions(out)
    assert set(frame["method"]) == {winner}
    _same_table(frame, references[winner])
    assert not lock_path(out).exists()


HOLDING_EXPLAIN = """
import sys, time
from pathlib import Path
from ehrlens.core.jsonl import read_jsonl
from ehrlens.data import create_sample_dataset
from ehrlens.explain import explain_cohort
from ehrlens.models.directory import load_model_dir

model_dir, data, out, ready, go = sys.argv[1:]
model, card = load_model_dir(model_dir)
dataset = create_sample_dataset(read_jsonl(data), schema=model.schema)

def wait_after_the_first_shard(index, path):
    if index == 0:
        Path(ready).write_text("one shard written")
        while not Path(go).exists():
            time.sleep(0.01)

explain_cohort(
    model, dataset, ["rollout"], batch_size=10, shard_size=10, out_dir=out,
    model_id=card["model_id"], on_shard=wait_after_the_first_shard,
)
"""


def test_item_4_a_second_explain_names_the_run_that_holds_the_folder(
    cli_cohort, references, tmp_path
):
    out, ready, go = tmp_path / "attr", tmp_path / "ready", tmp_path / "go"
    holder = python(
        HOLDING_EXPLAIN, cli_cohort / "model", cli_cohort / "data" / "samples.jsonl", out,
        ready, go,
    )  # fmt: skip
    try:
        _wait_for(ready, holder)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        second = run(*_explain_args(cli_cohort, "chefer", out))
        assert second.returncode == 3, second.stderr
        assert second.stderr.startswith(f"error: {out} is being written by another ehrlens run")
        assert f"(pid {holder.pid} on {socket.gethostname()}, since " in second.stderr
        assert "nothing was changed" in second.stderr
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        go.write_text("go")
        code, _, stderr = _finish(holder)
    assert code == 0, stderr
    _same_table(read_attributions(out), references["rollout"])


def _train_args(cohort, out, seed: int) -> list:
    return [
        "train", "--data", cohort / "data" / "samples.jsonl", "--schema",
        cohort / "data" / "schema.json", "--out", out, "--seed", seed, *TINY_TRAIN,
    ]  # fmt: skip


def test_item_4_two_train_runs_into_one_folder(cli_cohort, tmp_path):
    out = tmp_path / "model"
    processes = {seed: spawn(*_train_args(cli_cohort, out, seed)) for seed in (1, 2)}
    results = {seed: _finish(p) for seed, p in processes.items()}
    assert sorted(code for code, _, _ in results.values()) == [0, 3], results
    winner = next(seed for seed, (code, _, _) in results.items() if code == 0)
    loser = next(seed for seed in results if seed != winner)
    message = results[loser][2]
    assert ("is being written by another ehrlens run (pid" in message) or (
        f"error: {out} already holds a model" in message
    ), message
    _, card = load_model_dir(out)  # complete and consistent: weights and card of one run
    assert card["training"]["seed"] == winner
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.pt"]


def test_item_4_train_report_and_evaluate_wait_for_nobody(cli_cohort, tmp_path):
    """While another process holds an output, each writing command exits 3 naming it."""
    data = cli_cohort / "data" / "samples.jsonl"
    invoke("explain", "--model", cli_cohort / "model", "--data", data, "-m", "random",
           "--out", tmp_path / "attr", "-q")  # fmt: skip
    targets = {
        "train": tmp_path / "model",
        "report": tmp_path / "report.html",
        "evaluate": tmp_path / "results.json",
    }
    holder = python(
        "import sys, time\n"
        "from contextlib import ExitStack\n"
        "from ehrlens.core.locks import output_lock\n"
        "with ExitStack() as stack:\n"
        "    for t in sys.argv[2:]:\n"
        "        stack.enter_context(output_lock(t, command='the holder'))\n"
        "    open(sys.argv[1], 'w').close()\n"
        "    time.sleep(600)\n",
        tmp_path / "ready", *targets.values(),
    )  # fmt: skip
    try:
        _wait_for(tmp_path / "ready", holder)
        commands = {
            "train": _train_args(cli_cohort, targets["train"], 0),
            "report": [
                "report", "--model", cli_cohort / "model", "--data", data, "--attributions",
                tmp_path / "attr", "--out", targets["report"],
            ],
            "evaluate": [
                "evaluate", "--model", cli_cohort / "model", "--data", data, "-m", "random",
                "--bootstrap", 5, "--out", targets["evaluate"], "-q",
            ],
        }  # fmt: skip
        for name, args in commands.items():
            result = invoke(*args, expect=3)
            assert result.stderr.startswith(
                f"error: {targets[name]} is being written by another ehrlens run (pid "
                f"{holder.pid} on {socket.gethostname()}, since "
            ), (name, result.stderr)
            assert ": the holder); nothing was changed." in result.stderr, name
            assert not targets[name].exists(), name
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: its locks become stale
        holder.communicate()
    assert all(lock_path(t).exists() for t in targets.values())  # left by the dead holder
    invoke(*commands["evaluate"])  # a stale lock is taken over
    assert targets["evaluate"].exists() and not lock_path(targets["evaluate"]).exists()


def test_item_4_an_explain_lock_held_in_this_process_refuses_the_engine(cli_cohort, tmp_path):
    """The lock is per open file, so even another thread of the same process is refused."""
    out = tmp_path / "attr"
    with output_lock(out, command="another thread"):
        result = invoke(*_explain_args(cli_cohort, "rollout", out), expect=3)
    assert "another thread" in result.stderr
    assert not out.exists()

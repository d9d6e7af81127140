"""Outputs damaged after the fact, or left half-written by a killed run.

Issue "Hostile input, concurrent runs and wrong files", items 8 and 12: a bit flipped inside a
finished shard survived a re-run ("12 already complete"), since only Parquet metadata was
checked; a model folder killed between ``model.pt`` and ``card.json`` was accepted by
``explain`` (with seed 0 instead of the card's) and refused by ``train`` as "already holds a
model".
"""

from __future__ import annotations

import shutil
import signal
import struct

import pandas as pd
import pyarrow.parquet as pq
import pytest
from _cli_kit import TINY_TRAIN, invoke, python

from ehrlens.explain import read_attributions
from ehrlens.models.directory import load_model_dir

pytestmark = pytest.mark.slow


def _flip_a_score_bit(path) -> tuple[float, float]:
    """Flip the lowest bit of one score's bytes where they lie verbatim in the file; returns
    (old, new) score. The file stays a readable Parquet file with intact metadata."""
    scores = pq.read_table(path).column("score").to_pylist()
    data = bytearray(path.read_bytes())
    for score in scores:
        packed = struct.pack("<d", score)
        at = data.find(packed)
        if at >= 0 and data.count(packed) == 1:
            data[at] ^= 0x01
            path.write_bytes(bytes(data))
            return score, struct.unpack("<d", bytes(data[at : at + 8]))[0]
    raise AssertionError(f"no score of {path} is stored verbatim; cannot flip one")


def test_item_8_a_bit_flipped_in_a_finished_shard_is_found_and_recomputed(cli_cohort, tmp_path):
    args = [
        "explain", "--model", cli_cohort / "model", "--data",
        cli_cohort / "data" / "samples.jsonl", "-m", "random", "--out", tmp_path / "attr",
        "--shard-size", 5, "-q",
    ]  # fmt: skip
    invoke(*args)
    original = read_attributions(tmp_path / "attr")
    shard = tmp_path / "attr" / "part-00003.parquet"
    metadata_before = pq.read_metadata(shard).metadata
    old, new = _flip_a_score_bit(shard)
    # the attack is real: metadata unchanged, the file reads, one score is different
    assert pq.read_metadata(shard).metadata == metadata_before
    tampered = pq.read_table(shard).column("score").to_pylist()
    assert new != old and new in tampered and old not in tampered

    report = [
        "report", "--model", cli_cohort / "model", "--data",
        cli_cohort / "data" / "samples.jsonl", "--attributions", tmp_path / "attr",
        "--out", tmp_path / "r.html",
    ]  # fmt: skip
    result = invoke(*report, expect=1)
    assert result.stderr.strip() == (
        f"error: {shard}: does not verify: its data no longer matches the digest written with it "
        "(the file changed); run the same `ehrlens explain` command again to compute it anew"
    )
    assert not (tmp_path / "r.html").exists()
    rerun = invoke(*args)
    assert rerun.stdout.strip().endswith("(1 computed, 11 already complete)")
    # the same seeded method re-run in this process: exact
    pd.testing.assert_frame_equal(read_attributions(tmp_path / "attr"), original, check_exact=True)
    invoke(*report)


KILLED_SAVE = """
import os, signal, sys
import ehrlens.models.directory as directory

model, card = directory.load_model_dir(sys.argv[1])
real = directory.atomic_write

def die_before_the_card(path, *args, **kwargs):
    if os.path.basename(path) == directory.CARD:
        os.kill(os.getpid(), signal.SIGKILL)   # killed: model.pt is in place, card.json not
    return real(path, *args, **kwargs)

directory.atomic_write = die_before_the_card
directory.save_model_dir(model, sys.argv[2], card)
"""


def _killed_save(source, target) -> None:
    process = python(KILLED_SAVE, source, target)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, stderr


@pytest.mark.parametrize("over", ["new folder", "over a model"])
def test_item_12_a_half_written_model_folder_is_refused_everywhere(cli_cohort, tmp_path, over):
    data = cli_cohort / "data" / "samples.jsonl"
    folder = tmp_path / "model"
    if over == "over a model":
        shutil.copytree(cli_cohort / "model", folder)
    _killed_save(cli_cohort / "model", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]  # no old card left either
    incomplete = (
        f"error: {folder}: incomplete model directory (model.pt without card.json: the run that "
        "wrote it stopped before it finished); train again with --overwrite (or save_model_dir) "
        "to replace it, or delete the folder"
    )
    invoke("explain", "--model", cli_cohort / "model", "--data", data, "-m", "random",
           "--out", tmp_path / "attr", "-q")  # fmt: skip
    commands = {
        "explain": ["explain", "--model", folder, "--data", data, "--out", tmp_path / "a", "-q"],
        "evaluate": ["evaluate", "--model", folder, "--data", data, "-m", "random", "-q"],
        "report": ["report", "--model", folder, "--data", data, "--attributions",
                   tmp_path / "attr", "--out", tmp_path / "r.html"],
    }  # fmt: skip
    for name, args in commands.items():
        assert invoke(*args, expect=1).stderr.strip() == incomplete, name
    assert not (tmp_path / "a").exists() and not (tmp_path / "r.html").exists()
    train = [
        "train", "--data", data, "--schema", cli_cohort / "data" / "schema.json",
        "--out", folder, "--seed", 3, *TINY_TRAIN,
    ]  # fmt: skip
    result = invoke(*train, expect=3)
    assert result.stderr.strip() == (
        f"error: {folder} holds an incomplete model directory (model.pt without card.json: a "
        "run that stopped before it finished); pass --overwrite to replace it, or choose a new "
        "--out"
    )
    invoke(*train, "--overwrite")  # the recovery the messages name
    _, card = load_model_dir(folder)
    assert card["training"]["seed"] == 3

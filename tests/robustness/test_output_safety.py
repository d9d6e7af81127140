"""Locks, ``--overwrite`` and run manifests never lose or write through a user's files.

Issue "Eighteen more ways the promises break", items 1-3, 8, 14 and 18: a lock file that is a
symbolic link to a user's CSV was truncated and written; ``--overwrite`` replaced a device,
FIFO or socket with a regular file; ``explain --overwrite`` deleted a user's files named like
shards; an edited manifest (``shards: 3``) was trusted; a FIFO lock was deleted; link loops
and dangling links gave tracebacks; a refused re-run printed two whole run summaries.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from pathlib import Path

import pytest
from _cli_kit import invoke, tree

from ehrlens.core.locks import LOCK_SUFFIX
from ehrlens.explain import read_attributions
from ehrlens.explain.shards import MANIFEST

pytestmark = pytest.mark.slow


def _can_mknod() -> bool:
    """Whether this process may make a character device (root, outside a locked container)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            os.mknod(Path(folder) / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, OSError):
            return False
        return True


#: The kinds of special file this system lets a test make.
NODES = ["fifo", "socket", *(["char_device"] if _can_mknod() else [])]


def _make_node(path: Path, kind: str) -> list:
    """Make ``path`` a special file of ``kind``; returns what must stay open (a socket)."""
    if kind == "fifo":
        os.mkfifo(path)
        return []
    if kind == "char_device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        return []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    return [server]


def _mode(path: Path) -> int:
    return os.lstat(path).st_mode


def _is_kind(path: Path, kind: str) -> bool:
    test = {"fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK, "char_device": stat.S_ISCHR}[kind]
    return test(_mode(path))


def _explain(cohort: Path, out: Path, *extra, expect: int = 0):
    return invoke(
        "explain", "--model", cohort / "model", "--data", cohort / "data" / "samples.jsonl",
        "-m", "rollout", "--out", out, "--shard-size", 8, "-q", *extra, expect=expect,
    )  # fmt: skip


# ------------------------------------------------------------------------------- item 1
def test_item_1_a_lock_file_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path):
    """The lock of ``out`` is a symbolic link to a user's CSV: the command exits 3 naming the
    link, and the CSV keeps its bytes (it was truncated and overwritten with JSON)."""
    user = tmp_path / "mine.csv"
    user.write_text("id,value\n1,2\n")
    out = tmp_path / "cohort"
    (tmp_path / f".cohort{LOCK_SUFFIX}").symlink_to(user)
    result = invoke("synthetic", out, "--patients", 5, expect=3)
    assert "is a symbolic link, not an ehrlens lock file" in result.stderr, result.stderr
    assert user.read_text() == "id,value\n1,2\n"
    assert not out.exists()


# ------------------------------------------------------------------------------- item 2
@pytest.mark.parametrize("kind", NODES)
def test_item_2_overwrite_never_replaces_a_special_file(cli_cohort, finished_run, tmp_path, kind):
    """``report --out NODE --overwrite`` with NODE a device, FIFO or socket: refused by name,
    exit 3, NODE still what it was (a device was replaced by a regular file)."""
    node = tmp_path / "node"
    keep = _make_node(node, kind)
    try:
        result = invoke(
            "report", "--model", cli_cohort / "model", "--data",
            cli_cohort / "data" / "samples.jsonl", "--attributions", finished_run,
            "--out", node, "--overwrite", expect=3,
        )  # fmt: skip
        assert f"{node} is a" in result.stderr and "not a regular file" in result.stderr
        assert _is_kind(node, kind)
    finally:
        for thing in keep:
            thing.close()


@pytest.mark.parametrize("kind", NODES)
def test_item_2_a_special_file_among_a_commands_outputs_is_refused(tmp_path, kind):
    """``synthetic OUT --overwrite`` where OUT/samples.jsonl is a FIFO/socket/device."""
    out = tmp_path / "cohort"
    out.mkdir()
    keep = _make_node(out / "samples.jsonl", kind)
    try:
        result = invoke("synthetic", out, "--patients", 5, "--overwrite", expect=3)
        assert "samples.jsonl is a" in result.stderr and "not a regular file" in result.stderr
        assert _is_kind(out / "samples.jsonl", kind)
        assert sorted(p.name for p in out.iterdir()) == ["samples.jsonl"]
    finally:
        for thing in keep:
            thing.close()


# ------------------------------------------------------------------------------- item 3
def test_item_3_explain_overwrite_removes_only_the_previous_runs_files(cli_cohort, tmp_path):
    """A previous run of 8 shards plus a user's ``part-00042.parquet``, ``.part-mine.tmp`` and
    notes: ``--overwrite`` with another method replaces the run and keeps the user's files."""
    out = tmp_path / "attr"
    _explain(cli_cohort, out)
    user_files = {
        "part-00042.parquet": b"my own parquet",
        ".part-mine.tmp": b"my temp",
        "notes.txt": b"notes",
    }
    for name, content in user_files.items():
        (out / name).write_bytes(content)
    invoke(
        "explain", "--model", cli_cohort / "model", "--data",
        cli_cohort / "data" / "samples.jsonl", "-m", "chefer", "--out", out,
        "--shard-size", 8, "-q", "--overwrite",
    )  # fmt: skip
    for name, content in user_files.items():
        assert (out / name).read_bytes() == content, name
    assert set(read_attributions(out)["method"]) == {"chefer"}


def test_item_3_a_users_file_where_the_new_run_writes_is_refused(cli_cohort, tmp_path):
    """A user's ``part-00000.parquet`` in a folder without a manifest is never overwritten."""
    out = tmp_path / "attr"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"mine")
    result = _explain(cli_cohort, out, "--overwrite", expect=3)
    assert "already holds shard files" in result.stderr
    assert (out / "part-00000.parquet").read_bytes() == b"mine"


# ------------------------------------------------------------------------------- item 8
@pytest.fixture(scope="module")
def finished_run(cli_cohort, tmp_path_factory):
    """A finished run of the 60-patient cohort in 8 shards."""
    out = tmp_path_factory.mktemp("finished") / "attr"
    _explain(cli_cohort, out)
    return out


def _copy(folder: Path, to: Path) -> Path:
    to.mkdir()
    for path in folder.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


def test_item_8_an_edited_shard_count_is_found(cli_cohort, finished_run, tmp_path):
    """``shards: 3`` in the manifest: reading refuses (it returned 3 of 8 shards), and a re-run
    refuses instead of calling the 8 shards complete and keeping the wrong manifest."""
    out = _copy(finished_run, tmp_path / "attr")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["shards"] == 8
    manifest["shards"] = 3
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="cannot be trusted: its content no longer matches"):
        read_attributions(out)
    before = tree(out)
    result = _explain(cli_cohort, out, expect=3)
    assert "cannot be trusted" in result.stderr and "--overwrite" in result.stderr
    assert tree(out) == before
    _explain(cli_cohort, out, "--overwrite")
    assert read_attributions(out)["patient_id"].nunique() == 60


def test_item_8_a_resealed_manifest_is_cross_checked_with_the_shards(finished_run, tmp_path):
    """Even with its digest recomputed, a manifest listing 3 of 8 shards does not read: the
    shards say there are more, and the row count disagrees."""
    from ehrlens.explain.shards import manifest_digest

    out = _copy(finished_run, tmp_path / "attr")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"] = 3
    manifest["digest"] = manifest_digest(manifest)
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"part-00003\.parquet belongs to this run"):
        read_attributions(out)
    (out / "part-00003.parquet").unlink()
    with pytest.raises(ValueError, match=r"the manifest says \d+ rows but its 3 shard"):
        read_attributions(out)


# ------------------------------------------------------------------------------ item 14
def test_item_14_a_fifo_lock_is_refused_and_kept(tmp_path):
    """The lock path is a FIFO: a clear refusal (was "[Errno 22] Invalid argument"), and the
    FIFO is still there (it was deleted)."""
    lock = tmp_path / f".cohort{LOCK_SUFFIX}"
    os.mkfifo(lock)
    result = invoke("synthetic", tmp_path / "cohort", "--patients", 5, expect=3)
    assert "is a FIFO (named pipe), not an ehrlens lock file" in result.stderr, result.stderr
    assert "Errno" not in result.stderr
    assert stat.S_ISFIFO(_mode(lock))


def test_item_14_a_symlink_loop_out_is_a_clear_error(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    result = invoke("synthetic", loop, "--patients", 5, expect=3)
    assert "symbolic link loop" in result.stderr and "Traceback" not in result.stderr
    assert loop.is_symlink()


def test_item_14_a_dangling_symlink_out_is_a_clear_error(tmp_path):
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    result = invoke("synthetic", dangling, "--patients", 5, expect=3)
    assert "is a symbolic link to" in result.stderr and "which does not exist" in result.stderr
    assert "Errno 17" not in result.stderr
    assert not (tmp_path / "nowhere").exists()


# ------------------------------------------------------------------------------ item 18
def test_item_18_a_refused_resume_shows_only_what_differs(cli_cohort, finished_run, tmp_path):
    """Re-running into a finished folder with another batch size names that one setting (the
    two run summaries it printed looked identical)."""
    out = _copy(finished_run, tmp_path / "attr")
    result = _explain(cli_cohort, out, "--batch-size", 3, expect=3)
    message = result.stderr
    assert "the settings that differ (that run -> this one): batch_size: " in message, message
    assert "-> 3; nothing was changed" in message
    assert "model_id" not in message and "methods" not in message

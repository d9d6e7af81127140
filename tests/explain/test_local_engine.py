"""explain_cohort: the whole cohort as one table, in resumable Parquet shards.

Tables of one run compare exactly (``check_exact=True``): a resumed or repeated run computes
each shard from the same batches in this process, so the same computation runs twice."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import (
    ATTRIBUTION_COLUMNS,
    OutputConflictError,
    attribution_columns,
    dataset_fingerprint,
    explain_cohort,
    model_fingerprint,
    read_attributions,
)
from ehrlens.explain.predictions import PREDICTION_COLUMNS
from ehrlens.explain.shards import table_digest
from ehrlens.explain.table import arrow_schema
from ehrlens.interpret import AttentionRollout, score_levels
from ehrlens.models import StageAttentionNet, Transformer

METHODS = ["rollout", "chefer", "random"]
N_PATIENTS = 48
SHARD = 10  # 48 patients: shards of 10, 10, 10, 10, 8
BATCH = 4


def count_units(sample, input_schema) -> int:
    """Non-padding input units of one raw sample, counted from the sample itself."""
    total = 0
    for key, schema in input_schema.items():
        value = sample[key]
        if schema == "sequence":
            total += len(value)
        elif schema == "nested_sequence":
            total += sum(len(visit) for visit in value)
        elif schema == "stagenet":
            steps = value[1]
            total += sum(len(s) if isinstance(s, list) else 1 for s in steps)
        elif schema == "timeseries":
            grid = value[1]
            total += len(grid) * len(grid[0]) if grid else 0
        elif schema == "tensor":
            total += len(value)
        else:
            raise AssertionError(schema)
    return total


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(
        N_PATIENTS, layout="nested", seed=4, include_labs=True, include_demographics=True
    )


@pytest.fixture(scope="module")
def dataset(cohort):
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


@pytest.fixture(scope="module")
def model(dataset):
    torch.manual_seed(0)
    return Transformer(dataset, embedding_dim=16, heads=2, num_layers=1, dropout=0.0).eval()


@pytest.fixture(scope="module")
def reference(model, dataset, tmp_path_factory):
    """An uninterrupted run on disk: (folder, result, frame)."""
    folder = tmp_path_factory.mktemp("reference") / "attr"
    result = explain_cohort(
        model, dataset, METHODS, batch_size=BATCH, shard_size=SHARD, out_dir=folder
    )
    return folder, result, result.to_frame()


def run(model, dataset, folder, methods=METHODS, **kwargs):
    options = {"batch_size": BATCH, "shard_size": SHARD, **kwargs}
    return explain_cohort(model, dataset, methods, out_dir=folder, **options)


def snapshot(folder):
    """Every file under ``folder`` (hidden ones too) with its bytes and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def shard_names(folder):
    return sorted(p.name for p in folder.glob("part-*.parquet"))


# ----------------------------------------------------------------------------- the table
def test_row_count_is_units_times_methods_and_rows_are_ordered(cohort, dataset, model):
    result = explain_cohort(model, dataset, METHODS, batch_size=BATCH, shard_size=SHARD)
    frame = result.to_frame()
    units = {s["patient_id"]: count_units(s, cohort.input_schema) for s in cohort.samples}
    assert sum(units.values()) == 1500  # fixed by the seeded cohort
    assert result.num_rows == len(frame) == 1500 * len(METHODS)
    assert list(frame.columns) == list(ATTRIBUTION_COLUMNS)
    assert result.shards == [] and result.reused == []
    assert result.computed == [0, 1, 2, 3, 4]
    # rows: patient after patient (dataset order), each with its methods in order
    blocks = frame[["patient_id", "method"]].drop_duplicates().values.tolist()
    assert blocks == [[s["patient_id"], m] for s in cohort.samples for m in METHODS]
    sizes = frame.groupby(["patient_id", "method"], sort=False).size()
    assert all(sizes[(pid, m)] == units[pid] for pid in units for m in METHODS)
    assert set(frame["model_id"]) == {model_fingerprint(model)}
    assert result.to_arrow().schema.equals(arrow_schema())


def test_scores_are_the_interpreters_scores(dataset, model):
    frame = explain_cohort(model, dataset, ["rollout"], batch_size=BATCH).to_frame()
    batch = dataset.collate([dataset[i] for i in range(BATCH)])
    with torch.inference_mode():
        scores = AttentionRollout(model).attribute(**batch)
    levels = score_levels(AttentionRollout(model))
    direct = pd.DataFrame(
        attribution_columns(
            scores, batch, model.schema, "rollout", model_fingerprint(model), levels
        )
    )
    head = frame[frame["patient_id"].isin(batch["patient_id"])].reset_index(drop=True)
    unscored = ["visit", *PREDICTION_COLUMNS]  # predictions: tests/explain/test_row_predictions.py
    pd.testing.assert_frame_equal(
        head.drop(columns=unscored), direct.drop(columns=unscored), check_dtype=False
    )
    assert head["visit"].isna().tolist() == direct["visit"].isna().tolist()


def test_disk_output_equals_the_in_memory_table(dataset, model, reference):
    folder, result, frame = reference
    memory = explain_cohort(model, dataset, METHODS, batch_size=BATCH, shard_size=SHARD)
    pd.testing.assert_frame_equal(frame, memory.to_frame(), check_exact=True)
    assert shard_names(folder) == [f"part-{i:05d}.parquet" for i in range(5)]
    assert result.shards == [folder / name for name in shard_names(folder)]
    assert result.computed == [0, 1, 2, 3, 4] and result.reused == []
    ids = dataset.patient_ids
    for index, path in enumerate(result.shards):
        table = pq.read_table(path)
        assert table.schema.remove_metadata().equals(arrow_schema())
        meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
        assert meta["ehrlens.run"] == result.fingerprint
        assert meta["ehrlens.shard"] == str(index)
        assert meta["ehrlens.rows"] == str(table.num_rows)
        patients = list(dict.fromkeys(table.column("patient_id").to_pylist()))
        assert patients == ids[index * SHARD : (index + 1) * SHARD]
    manifest = json.loads((folder / "_ehrlens_run.json").read_text())
    assert manifest["complete"] is True
    assert manifest["rows"] == result.num_rows == len(frame)
    assert manifest["shards"] == 5
    assert manifest["fingerprint"] == result.fingerprint
    assert sorted(manifest["settings"]["methods"]) == sorted(METHODS)
    assert manifest["settings"]["data"] == dataset_fingerprint(dataset)


# ----------------------------------------------------------------------------- resumption
class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_after_the_last_complete_shard(tmp_path, dataset, model, reference):
    _, full, expected = reference
    folder = tmp_path / "attr"
    calls = []

    def stop_after_two(index, path):
        calls.append((index, path))
        if len(calls) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(model, dataset, folder, on_shard=stop_after_two)
    assert calls == [(0, folder / "part-00000.parquet"), (1, folder / "part-00001.parquet")]
    assert shard_names(folder) == ["part-00000.parquet", "part-00001.parquet"]
    manifest = json.loads((folder / "_ehrlens_run.json").read_text())
    assert manifest["complete"] is False
    before = snapshot(folder)

    resumed = run(model, dataset, folder)
    assert resumed.reused == [0, 1]
    assert resumed.computed == [2, 3, 4]
    after = snapshot(folder)
    for name in ("part-00000.parquet", "part-00001.parquet"):
        assert after[name] == before[name]  # reused, not rewritten
    frame = resumed.to_frame()
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    keys = ["patient_id", "feature", "visit", "position", "method"]
    assert not frame.duplicated(subset=keys).any()
    assert resumed.num_rows == full.num_rows == len(frame)
    assert resumed.fingerprint == full.fingerprint
    assert json.loads((folder / "_ehrlens_run.json").read_text())["complete"] is True


def test_read_attributions_reads_only_a_finished_run(tmp_path, dataset, model, reference):
    folder, _, expected = reference
    pd.testing.assert_frame_equal(read_attributions(folder), expected, check_exact=True)
    with pytest.raises(FileNotFoundError, match=r"no _ehrlens_run\.json"):
        read_attributions(tmp_path)
    unfinished = tmp_path / "unfinished"

    def stop(index, path):
        raise Interrupt

    with pytest.raises(Interrupt):
        run(model, dataset, unfinished, on_shard=stop)
    with pytest.raises(ValueError, match="the explain run is unfinished"):
        read_attributions(unfinished)
    run(model, dataset, unfinished)
    (unfinished / "part-00003.parquet").unlink()
    with pytest.raises(ValueError, match=r"shard file\(s\) \['part-00003.parquet'\] are missing"):
        read_attributions(unfinished)


def test_rerun_of_a_complete_output_computes_nothing(tmp_path, dataset, model, reference):
    _, _, expected = reference
    folder = tmp_path / "attr"
    run(model, dataset, folder)
    shards_before = {k: v for k, v in snapshot(folder).items() if k.startswith("part-")}
    again = run(model, dataset, folder)
    assert again.computed == [] and again.reused == [0, 1, 2, 3, 4]
    assert {k: v for k, v in snapshot(folder).items() if k.startswith("part-")} == shards_before
    pd.testing.assert_frame_equal(again.to_frame(), expected, check_exact=True)


@pytest.mark.parametrize(
    "damage",
    ["truncate-half", "truncate-empty", "garbage", "other-shard"],
)
def test_damaged_shard_is_detected_and_recomputed(tmp_path, dataset, model, reference, damage):
    _, _, expected = reference
    folder = tmp_path / "attr"
    run(model, dataset, folder)
    target = folder / "part-00002.parquet"
    data = target.read_bytes()
    if damage == "truncate-half":
        with open(target, "r+b") as f:
            f.truncate(len(data) // 2)
    elif damage == "truncate-empty":
        target.write_bytes(b"")
    elif damage == "garbage":
        target.write_bytes(b"PAR1" + b"\x00" * 100 + b"PAR1")
    else:  # a complete shard of this run, but not the one that belongs here
        target.write_bytes((folder / "part-00001.parquet").read_bytes())
    rerun = run(model, dataset, folder)
    assert rerun.computed == [2]
    assert rerun.reused == [0, 1, 3, 4]
    assert target.read_bytes() != b""
    pd.testing.assert_frame_equal(rerun.to_frame(), expected, check_exact=True)


def test_stale_part_temp_files_are_removed(tmp_path, dataset, model, reference):
    _, _, expected = reference
    folder = tmp_path / "attr"

    def stop_after_one(index, path):
        raise Interrupt

    with pytest.raises(Interrupt):
        run(model, dataset, folder, on_shard=stop_after_one)
    # what a killed writer leaves behind: atomic_write's temporary file
    stale = [folder / ".part-00001.parquet.k2j3h4.tmp", folder / ".part-00003.parquet.x.tmp"]
    for path in stale:
        path.write_bytes(b"half a shard")
    resumed = run(model, dataset, folder)
    assert resumed.reused == [0] and resumed.computed == [1, 2, 3, 4]
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in folder.iterdir()) == ["_ehrlens_run.json"] + [
        f"part-{i:05d}.parquet" for i in range(5)
    ]
    pd.testing.assert_frame_equal(resumed.to_frame(), expected, check_exact=True)


def _rewrite_keeping_metadata(path, change):
    """Edit a shard's rows and write it back with its schema metadata (what pyarrow keeps)."""
    table = pq.read_table(path)
    frame = change(table.to_pandas())
    edited = pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)
    pq.write_table(edited.replace_schema_metadata(table.schema.metadata), path)


@pytest.mark.parametrize(
    "edit",
    ["score", "code", "swap-rows", "drop-row"],
)
def test_a_shard_edited_with_its_metadata_kept_is_found_and_recomputed(
    tmp_path, dataset, model, reference, edit
):
    _, _, expected = reference
    folder = tmp_path / "attr"
    run(model, dataset, folder)
    target = folder / "part-00002.parquet"

    def change(frame):
        if edit == "score":
            frame.loc[3, "score"] = np.nextafter(frame.loc[3, "score"], 2.0)  # one ulp
        elif edit == "code":
            frame.loc[0, "code"] = "Z999"
        elif edit == "swap-rows":
            frame = frame.iloc[[1, 0, *range(2, len(frame))]].reset_index(drop=True)
        else:
            frame = frame.iloc[:-1]
        return frame

    _rewrite_keeping_metadata(target, change)
    metadata = pq.read_metadata(target)
    if edit != "drop-row":  # the metadata alone still agrees: only the content digest can tell
        assert metadata.metadata[b"ehrlens.rows"] == str(metadata.num_rows).encode()
    with pytest.raises(ValueError) as error:
        read_attributions(folder)
    assert str(error.value).startswith(f"{target}: does not verify: ")
    rerun = run(model, dataset, folder)
    assert rerun.computed == [2] and rerun.reused == [0, 1, 3, 4]
    pd.testing.assert_frame_equal(read_attributions(folder), expected, check_exact=True)


def test_a_shard_without_a_content_digest_is_recomputed(tmp_path, dataset, model, reference):
    """What an older ehrlens wrote: metadata only; it is not trusted, it is recomputed."""
    _, _, expected = reference
    folder = tmp_path / "attr"
    run(model, dataset, folder)
    target = folder / "part-00001.parquet"
    table = pq.read_table(target)
    metadata = {k: v for k, v in table.schema.metadata.items() if k != b"ehrlens.content"}
    pq.write_table(table.replace_schema_metadata(metadata), target)
    with pytest.raises(ValueError, match="it has no content digest"):
        read_attributions(folder)
    rerun = run(model, dataset, folder)
    assert rerun.computed == [1]
    assert b"ehrlens.content" in pq.read_table(target).schema.metadata
    pd.testing.assert_frame_equal(rerun.to_frame(), expected, check_exact=True)


def test_table_digest_sees_every_value_and_ignores_chunking(reference):
    folder, _, _ = reference
    table = pq.read_table(folder / "part-00000.parquet")
    digest = table_digest(table)
    assert digest == table.schema.metadata[b"ehrlens.content"].decode()  # written == read back
    rechunked = pa.concat_tables([table.slice(0, 7), table.slice(7)])
    assert rechunked.column("score").num_chunks == 2
    assert table_digest(rechunked) == digest
    assert table_digest(table.slice(0, 7)) != digest
    frame = table.to_pandas()
    assert frame["visit"].isna().any()  # flat features: null visits are covered too

    def digest_of(changed):
        return table_digest(pa.Table.from_pandas(changed, schema=table.schema))

    assert digest_of(frame) == digest
    for column, value in (
        ("patient_id", "P-other"), ("feature", "other"), ("visit", 0), ("position", 99),
        ("code", "other"), ("score", -1.0), ("method", "other"), ("model_id", "other"),
    ):  # fmt: skip
        row = int(frame.index[frame["visit"].isna()][0]) if column == "visit" else 0
        changed = frame.copy()
        changed.loc[row, column] = value
        assert digest_of(changed) != digest, column
    # moving bytes between neighbouring strings changes the digest ("ab","c" vs "a","bc")
    a, b = frame.copy(), frame.copy()
    a.loc[0, "code"], a.loc[1, "code"] = "ab", "c"
    b.loc[0, "code"], b.loc[1, "code"] = "a", "bc"
    assert digest_of(a) != digest_of(b)


# ----------------------------------------------------------------------------- conflicts
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": ["rollout", "chefer"]}, r'differ .*: methods\.random: \["RandomBaseline"'),
        ({"shard_size": 12}, r"differ .*: shard_size: \d+ -> 12; nothing"),
        ({"batch_size": 5}, r"differ .*: batch_size: \d+ -> 5; nothing"),
        ({"methods": {"rollout": {"head_fusion": "max"}, "chefer": {}, "random": {}}}, "rollout"),
        ({"methods": {"rollout": {}, "chefer": {}, "random": {"seed": 1}}}, "methods.random"),
        ({"model_id": "another-model"}, r'model_id: "[0-9a-f]{12}" -> "another-model"; nothing'),
    ],
)
def test_another_runs_folder_is_refused_and_left_unchanged(
    tmp_path, dataset, model, reference, change, message
):
    folder = tmp_path / "attr"
    run(model, dataset, folder)
    (folder / ".part-00004.parquet.old.tmp").write_bytes(b"not ours to delete now")
    before = snapshot(folder)
    kwargs = dict(change)
    methods = kwargs.pop("methods", METHODS)
    with pytest.raises(OutputConflictError, match=message) as error:
        run(model, dataset, folder, methods=methods, **kwargs)
    assert "nothing was changed" in str(error.value)
    assert snapshot(folder) == before


def test_other_model_and_other_data_are_refused(tmp_path, cohort, dataset, model):
    folder = tmp_path / "attr"
    run(model, dataset, folder)
    before = snapshot(folder)
    torch.manual_seed(1)
    other = Transformer(dataset, embedding_dim=16, heads=2, num_layers=1, dropout=0.0).eval()
    with pytest.raises(OutputConflictError, match=f'model_id: "{model_fingerprint(model)}"'):
        run(other, dataset, folder)
    fewer = dataset.subset(range(N_PATIENTS - 1))
    with pytest.raises(OutputConflictError):
        run(model, fewer, folder)
    assert snapshot(folder) == before


def test_foreign_shards_or_a_broken_manifest_are_refused(tmp_path, dataset, model, reference):
    source, _, _ = reference
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "part-00000.parquet").write_bytes((source / "part-00000.parquet").read_bytes())
    before = snapshot(foreign)
    with pytest.raises(OutputConflictError, match=r"already holds shard files .* but no"):
        run(model, dataset, foreign)
    assert snapshot(foreign) == before
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "_ehrlens_run.json").write_text("{not json")
    with pytest.raises(OutputConflictError, match="unreadable run manifest"):
        run(model, dataset, broken)
    assert snapshot(broken) == {"_ehrlens_run.json": snapshot(broken)["_ehrlens_run.json"]}
    assert (broken / "_ehrlens_run.json").read_text() == "{not json"


# ----------------------------------------------------------------------------- options
def test_method_specs_model_id_and_argument_checks(dataset, model):
    small = dataset.subset(range(6))
    by_name = explain_cohort(model, small, "rollout").to_frame()
    by_options = explain_cohort(model, small, {"rollout": {}}).to_frame()
    by_instance = explain_cohort(model, small, {"rollout": AttentionRollout(model)}).to_frame()
    pd.testing.assert_frame_equal(by_name, by_options, check_exact=True)
    pd.testing.assert_frame_equal(by_name, by_instance, check_exact=True)
    renamed = explain_cohort(model, small, {"mine": AttentionRollout(model)}, model_id="m-1")
    frame = renamed.to_frame()
    assert set(frame["method"]) == {"mine"} and set(frame["model_id"]) == {"m-1"}
    assert frame["score"].tolist() == by_name["score"].tolist()
    with pytest.raises(ValueError, match="methods is empty"):
        explain_cohort(model, small, [])
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        explain_cohort(model, small, ["lime"])
    with pytest.raises(ValueError, match="batch_size and shard_size must be >= 1, got 0, 10"):
        explain_cohort(model, small, ["rollout"], batch_size=0, shard_size=10)
    with pytest.raises(ValueError, match="got 64, 0"):
        explain_cohort(model, small, ["rollout"], shard_size=0)


def test_explains_in_eval_mode_and_restores_the_mode(dataset):
    small = dataset.subset(range(8))
    torch.manual_seed(3)
    model = Transformer(small, embedding_dim=16, heads=2, num_layers=1, dropout=0.5)
    expected = explain_cohort(model.eval(), small, ["rollout", "chefer"]).to_frame()
    model.train()
    frame = explain_cohort(model, small, ["rollout", "chefer"]).to_frame()
    assert model.training is True
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)  # no dropout was applied


def test_progress_bar_goes_to_stderr(dataset, model, capsys):
    explain_cohort(model, dataset.subset(range(8)), ["rollout"], batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "explain:" in err and "/4 [" in err and "batch/s" in err


def test_stagenet_model_rows(tmp_path):
    cohort = generate_cohort(
        12, layout="stagenet", seed=6, include_labs=True, include_demographics=True
    )
    data = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    net = StageAttentionNet(
        data, embedding_dim=16, chunk_size=8, levels=2, heads=2, conv_size=3, dropout=0.0
    )
    result = explain_cohort(net, data, ["rollout"], out_dir=tmp_path / "a", shard_size=5)
    units = sum(count_units(s, cohort.input_schema) for s in cohort.samples)
    assert result.num_rows == len(result.to_frame()) == units
    assert len(result.shards) == 3


def test_dataset_fingerprint_tracks_codes_and_ids(cohort, dataset):
    assert dataset_fingerprint(dataset) == dataset_fingerprint(
        create_sample_dataset(cohort.samples, schema=dataset.schema)
    )
    changed = [dict(s) for s in cohort.samples]
    changed[5] = {**changed[5], "diagnoses": [["ZZZ"], *changed[5]["diagnoses"][1:]]}
    assert dataset_fingerprint(create_sample_dataset(changed, schema=dataset.schema)) != (
        dataset_fingerprint(dataset)
    )
    renamed = [dict(s) for s in cohort.samples]
    renamed[0] = {**renamed[0], "patient_id": "someone else"}
    assert dataset_fingerprint(create_sample_dataset(renamed, schema=dataset.schema)) != (
        dataset_fingerprint(dataset)
    )


def test_files_written_are_not_private(tmp_path, dataset, model):
    folder = tmp_path / "attr"
    run(model, dataset.subset(range(3)), folder)
    mask = os.umask(0o022)
    os.umask(mask)
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path.name

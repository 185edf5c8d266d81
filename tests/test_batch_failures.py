"""Batch jobs that fail or are told to start afresh lose nothing (issue 12, defects 1, 2 and 10).

- ``--overwrite`` removes only what the previous job wrote, as its manifest lists it; it is refused in the
  input file's folder (or a parent) unless given twice; temporary files of a killed write are removed and
  counted; shard files are fsynced; per-shard seconds are the ranking time.
- A ranker that raises stops the local engine with an error naming the shard and the pair; shards committed
  before are kept and the same command resumes after the fix.  (The Ray engine: ``test_batch_ray.py``.)
- A hand-made manifest with a missing or mistyped field is refused naming the field and the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import pytest

from surerank.batch import BatchConfig, Manifest, run_batch
from surerank.cli import batch as batch_cli
from surerank.errors import InputError, SureRankError

POISON = "surerank.batch.faults:PoisonRanker"


def write_input(path: Path, queries: int = 6, candidates: int = 3, poison_at: tuple[int, int] | None = None) -> Path:
    """``queries`` queries q0.. with candidates d0..; the candidate at ``poison_at`` holds the word POISON."""
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(queries):
            cands = [{"id": f"d{j}", "text": ("POISON " if (i, j) == poison_at else "") + "x" * (j + 1)}
                     for j in range(candidates)]
            handle.write(json.dumps({"qid": f"q{i}", "query": f"query {i}", "candidates": cands}) + "\n")
    return path


def config_for(source: Path, output: Path, **extra) -> BatchConfig:
    return BatchConfig(inputs=[source], output=output, ranker="bm25", shard_pairs=3, progress=False, **extra)


def test_overwrite_in_the_input_folder_is_refused_once_and_keeps_the_input_when_forced(tmp_path):
    """The reported data loss: --work-dir is the folder holding the input; --overwrite deleted it all."""
    folder = tmp_path / "data"
    folder.mkdir()
    source = write_input(folder / "in.jsonl")
    notes = folder / "notes.txt"
    notes.write_text("not surerank's")
    config = config_for(source, folder / "out.run", work_dir=folder)
    run_batch(config)
    config.shard_pairs = 6  # a different job now: the old shard files must go, the input must stay
    config.overwrite = 1
    with pytest.raises(InputError, match=rf"--work-dir {folder}.*input file {source}"):
        run_batch(config)
    assert source.exists() and notes.exists() and (folder / "shard-00005.parquet").exists()

    parser = argparse.ArgumentParser()
    batch_cli.register(parser.add_subparsers())
    argv = ["batch", "--input", str(source), "--output", str(folder / "out.run"), "--work-dir", str(folder),
            "--ranker", "bm25", "--shard-size", "6", "--no-progress", "--overwrite", "--overwrite"]
    assert batch_cli.run(parser.parse_args(argv)) == 0
    assert source.read_text() == write_input(tmp_path / "again.jsonl").read_text()
    assert notes.read_text() == "not surerank's"
    assert sorted(p.name for p in folder.glob("shard-*.parquet")) == [f"shard-{i:05d}.parquet" for i in range(3)]
    assert len((folder / "out.run").read_text().splitlines()) == 18


def test_overwrite_removes_only_the_files_its_manifest_lists(tmp_path, caplog):
    source = write_input(tmp_path / "in.jsonl")
    config = config_for(source, tmp_path / "out.parquet")
    first = run_batch(config)
    work = config.resolved_work_dir()
    keep = [work / "notes.txt", work / "shard-99999.parquet", work / ".hidden"]
    for path in keep:
        path.write_text("mine")
    config.shard_pairs, config.overwrite = 9, True
    with caplog.at_level(logging.WARNING, logger="surerank.batch.job"):
        second = run_batch(config)
    assert all(path.read_text() == "mine" for path in keep)
    assert sorted(Path(p).name for p in second.removed) == sorted(
        ["manifest.json", "out.parquet"] + [f"shard-{i:05d}.parquet" for i in range(first.shards)])
    assert sum("--overwrite: removed" in r.message for r in caplog.records) == 1
    assert second.shards == 2 and second.output.exists()
    # an output changed by hand since the job wrote it is not the job's any more: kept
    second.output.write_bytes(b"edited")
    config.shard_pairs = 3
    third = run_batch(config)
    assert str(second.output) not in third.removed


def test_output_that_is_an_input_file_is_refused(tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    with pytest.raises(InputError, match="is the input file"):
        run_batch(BatchConfig(inputs=[source], output=source, ranker="bm25", output_format="jsonl",
                              progress=False))
    assert source.read_text() == write_input(tmp_path / "again.jsonl").read_text()


def test_temporary_files_of_a_killed_write_are_removed_and_counted(tmp_path, caplog):
    source = write_input(tmp_path / "in.jsonl")
    config = config_for(source, tmp_path / "out.parquet")
    work = config.resolved_work_dir()
    work.mkdir()
    stale = [tmp_path / ".out.parquet.tmp-4242", work / ".manifest.json.tmp-4242",
             work / ".shard-00001.parquet.tmp-shard"]
    unrelated = tmp_path / ".other.parquet.tmp-4242"
    for path in [*stale, unrelated]:
        path.write_bytes(b"half a file")
    with caplog.at_level(logging.WARNING, logger="surerank.batch.job"):
        result = run_batch(config)
    assert not any(path.exists() for path in stale) and unrelated.exists()
    assert sorted(result.temp_removed) == sorted(map(str, stale))
    warnings = [r.message for r in caplog.records if "temporary file" in r.message]
    assert len(warnings) == 1 and "3 temporary file(s)" in warnings[0]


def test_shard_files_and_their_folder_are_fsynced_before_the_manifest_records_them(tmp_path, monkeypatch):
    source = write_input(tmp_path / "in.jsonl", queries=2)
    config = config_for(source, tmp_path / "out.parquet")
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    run_batch(config)
    work = config.resolved_work_dir().resolve()
    for name in ("shard-00000.parquet", "shard-00001.parquet"):
        tmp = str(work / f".{name}.tmp-shard")
        assert tmp in synced, f"{name} was not fsynced"
        after = synced[synced.index(tmp) + 1:]
        assert after and after[0] == str(work), "the rename of the shard file was not made durable"


def test_shard_seconds_are_ranking_time_not_the_gap_between_results(tmp_path, monkeypatch):
    """A slow driver (here: a callback that advances a fake clock by 1000 s) must not count as ranking."""
    source = write_input(tmp_path / "in.jsonl", queries=3)
    offset = [0.0]
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + offset[0])

    def slow_driver(record) -> None:
        offset[0] += 1000.0

    result = run_batch(config_for(source, tmp_path / "out.parquet"), on_shard_done=slow_driver)
    seconds = [s.seconds for s in Manifest.load(result.manifest).shards]
    assert all(s is not None and 0 <= s < 1000 for s in seconds), seconds


def test_a_ranker_that_raises_names_shard_and_pair_and_the_rerun_resumes(tmp_path):
    source = write_input(tmp_path / "in.jsonl", poison_at=(3, 1))
    poison = tmp_path / "poison.json"
    poison.write_text(json.dumps({"text": "POISON", "mode": "raise"}))
    config = BatchConfig(inputs=[source], output=tmp_path / "out.parquet", ranker=POISON,
                         ranker_options={"poison_file": str(poison)}, shard_pairs=3, progress=False)
    with pytest.raises(SureRankError) as caught:  # a ShardFailedError
        run_batch(config)
    message = str(caught.value)
    for part in ("shard 3", "'q3'", "candidate 'd1'", "ValueError", "3 of 6 shards done so far are kept"):
        assert part in message, message
    assert (caught.value.shard, caught.value.qid, caught.value.docid) == (3, "q3", "d1")
    manifest = Manifest.load(config.resolved_work_dir() / "manifest.json")
    assert [s.status for s in manifest.shards] == ["done"] * 3 + ["pending"] * 3
    committed = {s.file: (s.sha256, (config.resolved_work_dir() / s.file).stat().st_mtime_ns)
                 for s in manifest.done()}

    poison.unlink()  # the fix
    result = run_batch(config)
    assert (result.shards_skipped, result.shards_ranked) == (3, 3)
    after = {s.file: s.sha256 for s in Manifest.load(result.manifest).shards}
    for name, (sha, mtime) in committed.items():
        assert (config.resolved_work_dir() / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
        assert after[name] == sha


@pytest.mark.parametrize(("damage", "field"), [
    (lambda m: m.pop("totals"), "'totals' is missing"),
    (lambda m: m["shards"][1].pop("pairs"), r"'shards\[1\]\.pairs' is missing"),
    (lambda m: m["input"].pop("fingerprint"), "'input.fingerprint' is missing"),
    (lambda m: m["shards"][0].update(pairs="3"), r"'shards\[0\]\.pairs' must be int, got str"),
    (lambda m: m["shards"][0].update(file="../in.jsonl"), r"'shards\[0\]\.file' must be a plain file name"),
    (lambda m: m["shards"][0].update(colour="red"), r"unknown manifest field 'shards\[0\]\.colour'"),
    (lambda m: m.update(shards={}), "'shards' must be list, got dict"),
])
def test_a_hand_made_manifest_with_a_bad_field_names_it_and_the_file(tmp_path, damage, field):
    source = write_input(tmp_path / "in.jsonl", queries=2)
    config = config_for(source, tmp_path / "out.parquet")
    result = run_batch(config)
    raw = json.loads(result.manifest.read_text())
    damage(raw)
    result.manifest.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=rf"{result.manifest}: .*{field}"):
        run_batch(config)
    config.overwrite = 1  # starting afresh still works, and touches only the manifest
    assert run_batch(config).pairs == 6
    assert source.exists()

"""A batch job: plan shards, skip the finished ones, rank the rest, merge, check exactly-once.

Restart semantics: run the same command again.  The manifest in the work directory names the input
fingerprint, the ranker and the settings; if they match, shards recorded as done whose file still has
the recorded row count and SHA-256 are kept, every other shard is ranked again (a shard file without a
manifest entry is a partial shard and is overwritten), and the merge checks that every (qid, docid) of
the input appears exactly once in the output.

``--overwrite`` discards the previous job by removing only what it wrote, as listed by its manifest (shard
files, the output whose SHA-256 it recorded, the manifest, temporary files), never the folder; and it is
refused when the work directory or output is an input file's folder or one of its parents, unless given
twice (``overwrite=2``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surerank.batch.io import detect_output_format, read_queries, write_output
from surerank.batch.local_runner import RankerConfig, run_local
from surerank.batch.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardRecord,
    describe_difference,
    input_fingerprint,
    sha256_file,
)
from surerank.batch.ray_runner import RayOptions, run_ray
from surerank.batch.shards import ShardFailedError, plan_shards, queries_to_table, result_schema, seconds_of
from surerank.errors import InputError, SureRankError
from surerank.storage import durable_replace, fsync_file
from surerank.types import Query

logger = logging.getLogger(__name__)


@dataclass
class BatchConfig:
    inputs: list[Path]
    output: Path
    ranker: str = "embedding"
    ranker_options: dict[str, Any] = field(default_factory=dict)
    input_format: str = "auto"
    output_format: str = "auto"
    passages: Path | None = None
    queries: Path | None = None
    shard_pairs: int = 10_000
    work_dir: Path | None = None
    engine: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)
    keep_text: bool = False
    overwrite: int = 0  # 1 (or True): discard a previous job's files; 2: even in an input file's folder
    clean: bool = False
    tag: str | None = None
    progress: bool = True

    def resolved_work_dir(self) -> Path:
        return self.work_dir or self.output.with_name(self.output.name + ".shards")


@dataclass
class BatchResult:
    output: Path
    manifest: Path
    queries: int
    pairs: int
    shards: int
    shards_skipped: int
    shards_ranked: int
    seconds_ranking: float
    pairs_ranked: int
    removed: list[str] = field(default_factory=list)  # files of a previous job removed by --overwrite
    temp_removed: list[str] = field(default_factory=list)  # temporary files of a killed run, removed

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_ranked / self.seconds_ranking if self.seconds_ranking else 0.0


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def run_batch(
    config: BatchConfig, on_shard_done: Callable[[ShardRecord], None] | None = None
) -> BatchResult:
    """Run (or continue) a batch job; ``on_shard_done`` is called after each shard is durably recorded."""
    if config.engine not in ("local", "ray"):
        raise InputError(f"--engine {config.engine!r}: expected 'local' or 'ray'")
    output_format = (detect_output_format(config.output) if config.output_format == "auto"
                     else config.output_format)
    work_dir = config.resolved_work_dir()
    manifest_path = work_dir / MANIFEST_NAME

    fingerprinted = list(config.inputs) + [p for p in (config.passages, config.queries) if p is not None]
    for path in fingerprinted:
        if not path.exists():
            raise InputError(f"input file {path}: no such file")
    _refuse_to_clobber_inputs(config, work_dir, fingerprinted)
    queries = read_queries(config.inputs, config.input_format, config.passages, config.queries)
    if not queries:
        raise InputError(f"--input {', '.join(map(str, config.inputs))}: no queries found")
    planned = plan_shards(queries, config.shard_pairs)
    fresh = _planned_manifest(config, fingerprinted, queries, planned)

    removed = _discard_previous_job(manifest_path, work_dir) if config.overwrite else []
    manifest = fresh if config.overwrite else _resumed_manifest(manifest_path, fresh)
    work_dir.mkdir(parents=True, exist_ok=True)
    temp_removed = _remove_temp_files(work_dir, config.output)
    summary = {"output": config.output, "manifest": manifest_path, "queries": manifest.totals["queries"],
               "pairs": manifest.totals["pairs"], "shards": len(manifest.shards), "removed": removed,
               "temp_removed": temp_removed}

    if manifest is not fresh and _output_is_complete(manifest, config.output):
        logger.info("%s is already complete (manifest %s); nothing to do", config.output, manifest_path)
        if config.clean:
            _remove_shard_files(manifest, work_dir)
        return BatchResult(**summary, shards_skipped=len(manifest.shards), shards_ranked=0, seconds_ranking=0.0,
                           pairs_ranked=0)
    _recheck_done_shards(manifest, work_dir)
    pending = manifest.pending()
    skipped = len(manifest.shards) - len(pending)
    manifest.output = {}
    manifest.save(manifest_path)
    logger.info("%d queries, %d pairs in %d shards: %d already done, %d to rank (engine %s)",
                manifest.totals["queries"], manifest.totals["pairs"], len(manifest.shards), skipped,
                len(pending), config.engine)

    tables = [(record.id, queries_to_table(planned[record.id], record.id)) for record in pending]
    pairs_to_rank = sum(record.pairs for record in pending)
    writer = ShardWriter(manifest, manifest_path, _progress(pairs_to_rank, config.progress), on_shard_done)
    started = time.perf_counter()
    _rank_pending(config, tables, writer)
    seconds = time.perf_counter() - started

    expected = {(q.id, c.id) for q in queries for c in q.candidates}
    merged = merge_shards(manifest, work_dir, config.keep_text, expected)
    write_output(merged, config.output, output_format, config.tag or f"surerank-{config.ranker}")
    manifest.output = {"path": str(config.output), "format": output_format, "rows": merged.num_rows,
                       "sha256": sha256_file(config.output), "status": "complete"}
    manifest.save(manifest_path)
    if config.clean:
        _remove_shard_files(manifest, work_dir)
    return BatchResult(**summary, shards_skipped=skipped, shards_ranked=len(pending), seconds_ranking=seconds,
                       pairs_ranked=pairs_to_rank)


def _planned_manifest(config: BatchConfig, fingerprinted: list[Path], queries: list[Query],
                      planned: list[list[Query]]) -> Manifest:
    """The manifest of this job as if nothing were done yet: what a previous one must match to resume."""
    return Manifest(
        input={**input_fingerprint(fingerprinted), "format": config.input_format},
        ranker=_normalised({"name": config.ranker, "options": config.ranker_options}),
        settings=_normalised({"shard_pairs": config.shard_pairs, "keep_text": config.keep_text}),
        shards=[ShardRecord(id=i, file=f"shard-{i:05d}.parquet", queries=len(group),
                            pairs=sum(len(q.candidates) for q in group), first_qid=group[0].id)
                for i, group in enumerate(planned)],
        totals={"queries": len(queries), "pairs": sum(len(q.candidates) for q in queries)},
    )


def _resumed_manifest(manifest_path: Path, fresh: Manifest) -> Manifest:
    """The previous job's manifest when it is this job (resume), ``fresh`` when there is none; else refused."""
    if not manifest_path.exists():
        return fresh
    old = Manifest.load(manifest_path)
    if _normalised(old.job_key()) != _normalised(fresh.job_key()):
        raise InputError(
            f"{manifest_path} belongs to a different job (differs in: "
            f"{describe_difference(_normalised(old.job_key()), _normalised(fresh.job_key()))}); "
            "pass --overwrite to discard it, or choose another --work-dir"
        )
    old.input = fresh.input  # same fingerprint; keep the current paths
    return old


def _output_is_complete(manifest: Manifest, output: Path) -> bool:
    finished = manifest.output
    return (finished.get("status") == "complete" and output.exists() and finished.get("path") == str(output)
            and sha256_file(output) == finished.get("sha256"))


def _recheck_done_shards(manifest: Manifest, work_dir: Path) -> None:
    """A shard recorded as done is kept only while its file has the recorded rows and SHA-256."""
    for record in manifest.done():
        path = work_dir / record.file
        if not path.exists() or record.rows != record.pairs or sha256_file(path) != record.sha256:
            logger.warning("shard %d: file missing or changed since it was recorded; ranking it again",
                           record.id)
            record.status, record.rows, record.sha256 = "pending", None, None


class ShardWriter:
    """Writes each ranked shard durably (file on disk before the rename, then the manifest says done)."""

    def __init__(self, manifest: Manifest, manifest_path: Path, progress: Any,
                 on_shard_done: Callable[[ShardRecord], None] | None) -> None:
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.work_dir = manifest_path.parent
        self.progress = progress
        self.on_shard_done = on_shard_done
        self.by_id = {record.id: record for record in manifest.shards}

    def __call__(self, shard_id: int, table: Any) -> None:
        import pyarrow.parquet as pq

        record = self.by_id[shard_id]
        if table.num_rows != record.pairs:
            raise SureRankError(f"shard {shard_id}: ranked {table.num_rows} rows, expected {record.pairs}")
        path = self.work_dir / record.file
        tmp = path.with_name(f".{path.name}.tmp-shard")
        pq.write_table(table.sort_by([("shard", "ascending")]), tmp)
        fsync_file(tmp)  # the data must be on disk before the rename and the manifest say it is done
        durable_replace(tmp, path)
        record.status, record.rows, record.sha256 = "done", table.num_rows, sha256_file(path)
        seconds = seconds_of(table)  # measured where the ranker ran, not the gap between results
        record.seconds = None if seconds is None else round(seconds, 4)
        self.manifest.save(self.manifest_path)
        self.progress.update(record.pairs)
        logger.info("shard %d done: %d pairs", shard_id, record.pairs)
        if self.on_shard_done is not None:
            self.on_shard_done(record)


def _rank_pending(config: BatchConfig, tables: list[tuple[int, Any]], writer: ShardWriter) -> None:
    """Rank the pending shards with the chosen runner; a failure says how many shards are kept."""
    ranker = RankerConfig(config.ranker, config.ranker_options)
    for shard_id, _ in [t for t in tables if t[1].num_rows == 0]:  # queries without candidates only
        writer(shard_id, result_schema(config.keep_text).empty_table())
    tables = [t for t in tables if t[1].num_rows]
    try:
        if config.engine == "local":
            run_local(tables, ranker, config.keep_text, writer)
        else:
            run_ray(tables, ranker, config.keep_text, writer, config.ray)
    except ShardFailedError as error:
        done = len(writer.manifest.done())
        raise ShardFailedError(
            f"{error}. The {done} of {len(writer.manifest.shards)} shards done so far are kept in "
            f"{writer.manifest_path}; fix the cause and run the same command again to resume",
            error.shard, error.qid, error.docid,
        ) from error
    finally:
        writer.progress.close()


def merge_shards(
    manifest: Manifest, work_dir: Path, keep_text: bool, expected: set[tuple[str, str]] | None = None
) -> Any:
    """Concatenate shard files in shard order and check every input (qid, docid) appears exactly once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    not_done = [s.id for s in manifest.shards if s.status != "done"]
    if not_done:
        raise SureRankError(f"cannot merge: shards {not_done[:10]} are not done")
    parts = [pq.read_table(work_dir / s.file) for s in manifest.shards]
    table = pa.concat_tables(parts).cast(result_schema(keep_text))
    seen: set[tuple[str, str]] = set()
    for qid, docid in zip(table.column("qid").to_pylist(), table.column("docid").to_pylist(), strict=True):
        if (qid, docid) in seen:
            raise SureRankError(f"merge: ({qid!r}, {docid!r}) appears twice across shards")
        seen.add((qid, docid))
    if len(seen) != manifest.totals["pairs"] or (expected is not None and seen != expected):
        raise SureRankError(f"merge: the shards hold {len(seen)} pairs that do not match the input's "
                            f"{manifest.totals['pairs']}")
    return table.drop_columns(["shard"])


def _refuse_to_clobber_inputs(config: BatchConfig, work_dir: Path, inputs: list[Path]) -> None:
    """--overwrite on an input file's folder (or a parent), or an output that is an input: refused unless forced
    twice, since one mistyped path would otherwise put the input at risk."""
    if config.overwrite >= 2:
        return
    for path in inputs:
        source = path.resolve()
        if config.output.resolve() == source:
            raise InputError(f"--output {config.output} is the input file {path}; writing the output would "
                             "replace it (choose another --output, or pass --overwrite twice to force it)")
        if not config.overwrite:
            continue
        for flag, target in (("--work-dir", work_dir), ("--output", config.output)):
            resolved = target.resolve()
            if resolved == source.parent or resolved in source.parents:
                raise InputError(
                    f"--overwrite with {flag} {target}: that is the folder of the input file {path} or one "
                    "of its parents; --overwrite removes only the files the previous job wrote, but refuses "
                    "here in case a path was mistyped (choose another folder, or pass --overwrite twice)")


def _discard_previous_job(manifest_path: Path, work_dir: Path) -> list[str]:
    """--overwrite: remove what the previous job wrote, as its manifest lists it; never anything else."""
    removed: list[str] = []
    if not manifest_path.exists():
        return removed
    try:
        old: Manifest | None = Manifest.load(manifest_path)
    except InputError as error:
        logger.warning("--overwrite: %s; it cannot list the files its job wrote, so only the manifest is "
                       "removed (shard files of that job are replaced as the new job writes them)", error)
        old = None
    if old is not None:
        for record in old.shards:
            path = work_dir / record.file
            if path.is_file():
                path.unlink()
                removed.append(str(path))
        recorded = old.output.get("path")
        if recorded and Path(recorded).is_file():
            if old.output.get("sha256") == sha256_file(Path(recorded)):
                Path(recorded).unlink()
                removed.append(recorded)
            else:
                logger.warning("--overwrite: kept %s: it changed since the previous job wrote it", recorded)
    manifest_path.unlink()
    removed.append(str(manifest_path))
    logger.warning("--overwrite: removed %d file(s) the previous job wrote (manifest, shards, output); "
                   "everything else in %s is left as it was", len(removed), work_dir)
    return removed


def _remove_temp_files(work_dir: Path, output: Path) -> list[str]:
    """Temporary files of a killed write (shard, manifest, output): removed, counted and named in one warning."""
    patterns = [(work_dir, re.compile(r"\.shard-\d+\.parquet\.tmp-shard")),
                (work_dir, re.compile(rf"\.{re.escape(MANIFEST_NAME)}\.tmp-\d+")),
                (output.parent, re.compile(rf"\.{re.escape(output.name)}\.tmp-\d+"))]
    removed = []
    for folder, pattern in patterns:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if pattern.fullmatch(path.name) and path.is_file():
                path.unlink()
                removed.append(str(path))
    if removed:
        logger.warning("removed %d temporary file(s) left by a killed run: %s", len(removed), ", ".join(removed))
    return removed


def _remove_shard_files(manifest: Manifest, work_dir: Path) -> None:
    for record in manifest.shards:
        (work_dir / record.file).unlink(missing_ok=True)


class _NullProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NullProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="pair", desc="surerank batch", smoothing=0.1)


__all__ = ["BatchConfig", "BatchResult", "merge_shards", "run_batch"]

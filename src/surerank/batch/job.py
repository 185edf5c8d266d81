"""A batch job: plan shards, skip the finished ones, rank the rest, merge, check exactly-once.

Restart semantics: run the same command again.  The manifest in the work directory names the input
fingerprint, the ranker and the settings; if they match, shards recorded as done whose file still has
the recorded row count and SHA-256 are kept, every other shard is ranked again (a shard file without a
manifest entry is a partial shard and is overwritten), and the merge checks that every (qid, docid) of
the input appears exactly once in the output.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surerank.batch.engines import RankerConfig, RayOptions, run_local, run_ray
from surerank.batch.io import detect_output_format, read_queries, write_output
from surerank.batch.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardRecord,
    describe_difference,
    input_fingerprint,
    sha256_file,
)
from surerank.batch.shards import plan_shards, queries_to_table, result_schema
from surerank.errors import InputError, SureRankError

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
    overwrite: bool = False
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

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_ranked / self.seconds_ranking if self.seconds_ranking else 0.0


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def run_batch(
    config: BatchConfig, on_shard_done: Callable[[ShardRecord], None] | None = None
) -> BatchResult:
    """Run (or continue) a batch job; ``on_shard_done`` is called after each shard is durably recorded."""
    import pyarrow.parquet as pq

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
    queries = read_queries(config.inputs, config.input_format, config.passages, config.queries)
    if not queries:
        raise InputError(f"--input {', '.join(map(str, config.inputs))}: no queries found")
    planned = plan_shards(queries, config.shard_pairs)
    fresh = Manifest(
        input={**input_fingerprint(fingerprinted), "format": config.input_format},
        ranker=_normalised({"name": config.ranker, "options": config.ranker_options}),
        settings=_normalised({"shard_pairs": config.shard_pairs, "keep_text": config.keep_text}),
        shards=[ShardRecord(id=i, file=f"shard-{i:05d}.parquet", queries=len(group),
                            pairs=sum(len(q.candidates) for q in group), first_qid=group[0].id)
                for i, group in enumerate(planned)],
        totals={"queries": len(queries), "pairs": sum(len(q.candidates) for q in queries)},
    )

    manifest = fresh
    if manifest_path.exists() and not config.overwrite:
        old = Manifest.load(manifest_path)
        if _normalised(old.job_key()) != _normalised(fresh.job_key()):
            raise InputError(
                f"{manifest_path} belongs to a different job (differs in: "
                f"{describe_difference(_normalised(old.job_key()), _normalised(fresh.job_key()))}); "
                "pass --overwrite to discard it, or choose another --work-dir"
            )
        manifest = old
        manifest.input = fresh.input  # same fingerprint; keep the current paths
    elif work_dir.exists() and config.overwrite:
        logger.info("--overwrite: removing %s", work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in work_dir.glob(".*.tmp-*"):
        stale.unlink()

    finished = manifest.output if manifest is not fresh else {}
    if (finished.get("status") == "complete" and config.output.exists()
            and finished.get("path") == str(config.output) and sha256_file(config.output) == finished.get("sha256")):
        logger.info("%s is already complete (manifest %s); nothing to do", config.output, manifest_path)
        if config.clean:
            _remove_shard_files(manifest, work_dir)
        return BatchResult(
            output=config.output, manifest=manifest_path, queries=manifest.totals["queries"],
            pairs=manifest.totals["pairs"], shards=len(manifest.shards), shards_skipped=len(manifest.shards),
            shards_ranked=0, seconds_ranking=0.0, pairs_ranked=0,
        )
    for record in manifest.done():
        path = work_dir / record.file
        if not path.exists() or record.rows != record.pairs or sha256_file(path) != record.sha256:
            logger.warning("shard %d: file missing or changed since it was recorded; ranking it again",
                           record.id)
            record.status, record.rows, record.sha256 = "pending", None, None
    pending = manifest.pending()
    skipped = len(manifest.shards) - len(pending)
    manifest.output = {}
    manifest.save(manifest_path)
    logger.info("%d queries, %d pairs in %d shards: %d already done, %d to rank (engine %s)",
                manifest.totals["queries"], manifest.totals["pairs"], len(manifest.shards), skipped,
                len(pending), config.engine)

    by_id = {record.id: record for record in manifest.shards}
    tables = [(record.id, queries_to_table(planned[record.id], record.id)) for record in pending]
    pairs_to_rank = sum(record.pairs for record in pending)
    progress = _progress(pairs_to_rank, config.progress)
    started = time.perf_counter()
    last = [started]

    def on_result(shard_id: int, table: Any) -> None:
        record = by_id[shard_id]
        if table.num_rows != record.pairs:
            raise SureRankError(f"shard {shard_id}: ranked {table.num_rows} rows, expected {record.pairs}")
        path = work_dir / record.file
        tmp = path.with_name(f".{path.name}.tmp-shard")
        pq.write_table(table.sort_by([("shard", "ascending")]), tmp)
        tmp.replace(path)
        now = time.perf_counter()
        record.status, record.rows, record.sha256 = "done", table.num_rows, sha256_file(path)
        record.seconds = round(now - last[0], 4)
        last[0] = now
        manifest.save(manifest_path)
        progress.update(record.pairs)
        logger.info("shard %d done: %d pairs", shard_id, record.pairs)
        if on_shard_done is not None:
            on_shard_done(record)

    ranker = RankerConfig(config.ranker, config.ranker_options)
    for shard_id, _ in [t for t in tables if t[1].num_rows == 0]:  # queries without candidates only
        on_result(shard_id, result_schema(config.keep_text).empty_table())
    tables = [t for t in tables if t[1].num_rows]
    try:
        if config.engine == "local":
            run_local(tables, ranker, config.keep_text, on_result)
        else:
            run_ray(tables, ranker, config.keep_text, on_result, config.ray)
    finally:
        progress.close()
    seconds = time.perf_counter() - started

    expected = {(q.id, c.id) for q in queries for c in q.candidates}
    merged = merge_shards(manifest, work_dir, config.keep_text, expected)
    tag = config.tag or f"surerank-{config.ranker}"
    write_output(merged, config.output, output_format, tag)
    manifest.output = {"path": str(config.output), "format": output_format, "rows": merged.num_rows,
                       "sha256": sha256_file(config.output), "status": "complete"}
    manifest.save(manifest_path)
    if config.clean:
        _remove_shard_files(manifest, work_dir)
    return BatchResult(
        output=config.output, manifest=manifest_path, queries=manifest.totals["queries"],
        pairs=manifest.totals["pairs"], shards=len(manifest.shards), shards_skipped=skipped,
        shards_ranked=len(pending), seconds_ranking=seconds, pairs_ranked=pairs_to_rank,
    )


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

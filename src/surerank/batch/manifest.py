"""The job manifest: what a batch job is (input fingerprint, ranker, settings) and how far it got.

It is rewritten atomically (temporary file, fsync, rename) after every finished shard, so a job killed
at any instant leaves either the old or the new manifest, never a torn one.  A shard counts as done
only if the manifest says so *and* its file still has the recorded row count and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surerank.errors import InputError
from surerank.storage import atomic_path

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, fsync, then rename over the target: readers see the old or the new file, never half.  The temporary
    file is named ``.NAME.tmp-PID``, the name a restart looks for (job.py)."""
    with atomic_path(path, temp=path.with_name(f".{path.name}.tmp-{os.getpid()}")) as tmp:
        tmp.write_bytes(data)


def input_fingerprint(paths: list[Path]) -> dict[str, Any]:
    """SHA-256 of every input file; the combined digest is what a resumed job must match."""
    files = [{"path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)} for p in paths]
    combined = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
    return {"files": files, "fingerprint": combined}


@dataclass
class ShardRecord:
    id: int
    file: str
    queries: int
    pairs: int
    first_qid: str
    status: str = "pending"  # pending | done
    rows: int | None = None
    sha256: str | None = None
    seconds: float | None = None


@dataclass
class Manifest:
    """Everything needed to decide, on restart, which shards are already finished."""

    input: dict[str, Any]
    ranker: dict[str, Any]
    settings: dict[str, Any]
    shards: list[ShardRecord]
    totals: dict[str, int]
    output: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION
    updated: float = 0.0

    def job_key(self) -> dict[str, Any]:
        """What must match for a restart to continue this job rather than a different one."""
        return {"input": self.input["fingerprint"], "ranker": self.ranker, "settings": self.settings,
                "shards": [(s.id, s.queries, s.pairs, s.first_qid) for s in self.shards]}

    def save(self, path: Path) -> None:
        self.updated = time.time()
        atomic_write_bytes(path, json.dumps(asdict(self), indent=1, sort_keys=True).encode())

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and validate a manifest; a missing or mistyped field is an InputError naming it and the file."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: unreadable manifest ({error}); pass --overwrite to restart") from None
        if not isinstance(raw, dict):
            raise InputError(f"{path}: a manifest is a JSON object, got {type(raw).__name__}; "
                             "pass --overwrite to start afresh")
        if raw.get("version") != MANIFEST_VERSION:
            raise InputError(f"{path}: manifest version {raw.get('version')} is not {MANIFEST_VERSION}; "
                             "pass --overwrite to start afresh")
        _check_fields(path, "", raw, _MANIFEST_FIELDS)
        _check_fields(path, "input.", raw["input"], {"fingerprint": (str,), "files": (list,)})
        _check_fields(path, "totals.", raw["totals"], {"queries": (int,), "pairs": (int,)})
        shards = []
        for i, record in enumerate(raw["shards"]):
            where = f"shards[{i}]"
            if not isinstance(record, dict):
                raise InputError(f"{path}: manifest field '{where}' must be an object")
            _check_fields(path, f"{where}.", record, _SHARD_FIELDS, optional=_SHARD_OPTIONAL)
            if record.get("status", "pending") not in ("pending", "done"):
                raise InputError(f"{path}: manifest field '{where}.status' must be 'pending' or 'done', "
                                 f"got {record['status']!r}")
            name = record["file"]
            if not name or Path(name).name != name or name.startswith("."):
                raise InputError(f"{path}: manifest field '{where}.file' must be a plain file name inside "
                                 f"the work directory, got {name!r}")
            shards.append(ShardRecord(**record))
        raw["shards"] = shards
        return cls(**raw)

    def done(self) -> list[ShardRecord]:
        return [s for s in self.shards if s.status == "done"]

    def pending(self) -> list[ShardRecord]:
        return [s for s in self.shards if s.status != "done"]


_NUMBER = (int, float)
_MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "version": (int,), "input": (dict,), "ranker": (dict,), "settings": (dict,), "shards": (list,),
    "totals": (dict,), "output": (dict,), "updated": _NUMBER,
}
_SHARD_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (int,), "file": (str,), "queries": (int,), "pairs": (int,), "first_qid": (str,),
    "status": (str,), "rows": (int, type(None)), "sha256": (str, type(None)), "seconds": (*_NUMBER, type(None)),
}
_SHARD_OPTIONAL = {"status", "rows", "sha256", "seconds"}


def _check_fields(path: Path, prefix: str, raw: dict[str, Any], fields: dict[str, tuple[type, ...]],
                  optional: set[str] | frozenset[str] = frozenset({"output", "updated"})) -> None:
    """Hand check of one object's fields: name the first missing, mistyped or unknown one and the file."""
    for name, types in fields.items():
        if name not in raw:
            if name in optional:
                continue
            raise InputError(f"{path}: manifest field '{prefix}{name}' is missing; "
                             "pass --overwrite to start afresh")
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InputError(f"{path}: manifest field '{prefix}{name}' must be {expected}, "
                             f"got {type(value).__name__}; pass --overwrite to start afresh")
    if not prefix or prefix.startswith("shards["):
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise InputError(f"{path}: unknown manifest field '{prefix}{unknown[0]}'; "
                             "pass --overwrite to start afresh")


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    names = {"input": "input files", "ranker": "ranker or its options", "settings": "batch settings",
             "shards": "shard plan"}
    return ", ".join(names[k] for k in new if old.get(k) != new[k]) or "nothing"

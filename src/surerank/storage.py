"""Writing files so that a reader, or a crash, never sees half of one: the one home of atomic writes.

Every writer of a result, a cache entry, a trust artifact, an index or a model record goes through here: the data
goes to a uniquely named temporary file beside the target (same file system), is flushed to disk, renamed over
the target, and the folder is flushed so that the rename survives a power cut.  A failure removes the temporary
file and leaves the old target as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file written by another library (pyarrow, onnx) to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def durable_replace(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename ``tmp`` (already flushed) over ``path`` and flush the folder, so the rename survives a crash."""
    os.replace(tmp, path)
    fsync_folder(Path(path).parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp", temp: Path | None = None) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for the block to write; on success it is flushed and renamed over
    ``path``, on any error removed.  Concurrent writers never share a temporary file.  ``temp`` names it instead
    (a batch job does, so that a restart can find and remove the temporary files of a killed write)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if temp is None:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
        os.close(fd)
        temp = Path(name)
    tmp = temp
    try:
        yield tmp
        fsync_file(tmp)
        durable_replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """``open()`` for writing, atomically: the target appears whole when the block ends without error."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
        yield handle
        handle.flush()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike[str], document: Any, **dumps: Any) -> None:
    """``document`` as JSON (``dumps`` are json.dumps options, e.g. indent) with a final newline."""
    atomic_write_text(path, json.dumps(document, **dumps) + "\n")


def require_empty_folder(path: str | os.PathLike[str], field: str) -> None:
    """Refuse an output folder that exists and holds anything, or is a file: a run never writes over one."""
    from surerank.errors import InputError

    folder = Path(path)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{field} {folder}: exists and is not empty (or is a file); give a new or empty folder")


def publish_folder(staging: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Move a folder written in full at ``staging`` to ``output`` (new, or empty: it is replaced) in one rename
    on one file system, so a reader never sees it half written."""
    import shutil

    target = Path(output)
    if target.exists():
        target.rmdir()  # empty: require_empty_folder checked it before the work began
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(target))

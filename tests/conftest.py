"""Shared fixtures: the benchmark collections in ../shared/data (read in place, never copied)."""

from __future__ import annotations

import pytest

from surerank.eval.datasets import data_root, load_trec_dl


@pytest.fixture(scope="session")
def shared_data():
    return data_root()


@pytest.fixture(scope="session")
def dl19():
    return load_trec_dl(19)


@pytest.fixture(scope="session")
def dl20():
    return load_trec_dl(20)

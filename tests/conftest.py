"""Shared fixtures: the benchmark collections in ../shared/data (read in place, never copied).

Also the hypothesis profiles.  CI must not depend on luck: the "ci" profile replays the same examples on
every run (derandomize) and keeps no example database; .ci/run selects it with HYPOTHESIS_PROFILE=ci (CI=true
selects it too).  Local runs keep hypothesis' random exploration ("dev").
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import settings

from surerank.eval.datasets import data_root, load_trec_dl

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", settings.get_profile("default"))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# Graphs built or exported by the tests (random-weight architectures, a new hash each run) go to a cache of
# this session, shared by its tests and their subprocesses, and removed at its end -- never the user's
# ~/.cache/surerank.  SURERANK_CACHE set by the caller is respected.
_SESSION_CACHE = None if os.environ.get("SURERANK_CACHE") else tempfile.mkdtemp(prefix="surerank-test-cache-")
if _SESSION_CACHE:
    os.environ["SURERANK_CACHE"] = _SESSION_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data():
    return data_root()


@pytest.fixture(scope="session")
def dl19():
    return load_trec_dl(19)


@pytest.fixture(scope="session")
def dl20():
    return load_trec_dl(20)

"""Shared set-up for the Python tests.

The process-wide runtime (convjit.default_runtime(), which convjit.torch uses) reads
CONVJIT_CACHE_DIR when it is made: point it at a temporary directory before any test
can make it, so that the tests never write to the user's cache.
"""

import os
import shutil
import tempfile

import pytest

_SESSION_CACHE = tempfile.mkdtemp(prefix="convjit-pytest-")
os.environ["CONVJIT_CACHE_DIR"] = _SESSION_CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def runtime(tmp_path):
    """A Runtime of its own on an empty cache directory."""
    import convjit

    return convjit.Runtime(cache_dir=tmp_path / "cache")


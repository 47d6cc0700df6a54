"""Suite-wide: the data catalog (daemon/catalog.py) of every test, and of every himari process a
test starts, lives in a temporary directory, never in the user's ~/.cache; and no test's logging
set-up outlives it."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import structlog


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    path = tempfile.mkdtemp(prefix="himari-catalog-")
    os.environ["HIMARI_CATALOG_DIR"] = path
    config._himari_catalog_dir = path


def pytest_unconfigure(config) -> None:  # type: ignore[no-untyped-def]
    path = getattr(config, "_himari_catalog_dir", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _restore_structlog():
    """`main()` run in-process binds structlog to that test's captured stderr, which pytest closes
    afterwards; a later test that logs would then fail on the closed file."""
    yield
    structlog.reset_defaults()

"""Fixtures of the integration tests: a private PostgreSQL server for the SQLAlchemy
tests, the queue suite's own (``tests/queue/pgserver.py``), one per test process."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _pgserver() -> Any:
    # tests/queue is not a package; load its fixture module once, by path, under the
    # name the queue suite imports it by, so that both suites share it in a process.
    module = sys.modules.get("pgserver")
    if module is None:
        path = Path(__file__).resolve().parent.parent / "queue" / "pgserver.py"
        spec = importlib.util.spec_from_file_location("pgserver", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["pgserver"] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A running PostgreSQL server; skipped where none can run, failed under CI=true."""
    pgserver = _pgserver()
    bindir = pgserver.find_bin()
    missing = None
    if bindir is None:
        missing = "no PostgreSQL server binaries found"
    elif importlib.util.find_spec("psycopg") is None:
        missing = "the psycopg driver is not installed"
    if missing is not None:
        message = f"PostgreSQL integration tests skipped: {missing}; to run them, {pgserver.ENABLE}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI=true a skip is a failure: {message}")
        pytest.skip(message)
    server = pgserver.PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()

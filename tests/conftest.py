"""Fixtures shared by every test: the async backends, a clean registry, no leaked threads."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import OperationRegistry

# How long a test's stray non-daemon threads may take to finish before it counts as a
# leak. A backstop against a hang, not a measurement: anyio's idle worker threads and
# executor threads stop on their own shortly after their event loop closes.
THREAD_GRACE_SECONDS = 10.0

# Joining the helper threads a test started: a backstop against a hang.
JOIN_SECONDS = 10.0


# The temporary directory of every process the tests start: removed at the end of the
# run, with what a process killed by its test (SIGKILL of a serve node) could not remove
# itself (multiprocessing's pymp-* directories and their sockets).
_CHILD_TMPDIR: str | None = None
_OLD_TMPDIR: str | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    global _CHILD_TMPDIR, _OLD_TMPDIR
    tempfile.gettempdir()  # this process keeps its own (cached before TMPDIR changes)
    _OLD_TMPDIR = os.environ.get("TMPDIR")
    _CHILD_TMPDIR = tempfile.mkdtemp(prefix="cancelpool-tests-")
    # Traversable (not listable): the test PostgreSQL server runs as another user.
    os.chmod(_CHILD_TMPDIR, 0o711)
    os.environ["TMPDIR"] = _CHILD_TMPDIR
    # pytest-benchmark, when installed, warns at start-up that xdist disables it; with
    # filterwarnings = error that warning would abort the whole run.
    config.addinivalue_line(
        "filterwarnings", "ignore:Benchmarks are automatically disabled because xdist"
    )
    config.addinivalue_line(
        "markers",
        "allow_thread_leak: the test may leave non-daemon threads running "
        "(they are owned by a longer-lived fixture)",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OLD_TMPDIR is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = _OLD_TMPDIR
    if _CHILD_TMPDIR is not None:
        shutil.rmtree(_CHILD_TMPDIR, ignore_errors=True)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every async test runs on asyncio, asyncio with uvloop, and trio."""
    return request.param


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    """Each test starts and ends with an empty process-wide operation registry."""
    registry = OperationRegistry.get_instance()
    registry._clear()
    yield
    registry._clear()


def _live_non_daemon() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.daemon and t.is_alive()}


@pytest.fixture(autouse=True)
def _no_thread_leak(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a non-daemon thread running after it ends."""
    before = _live_non_daemon()
    yield
    if request.node.get_closest_marker("allow_thread_leak"):
        return
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    leaked = _live_non_daemon() - before
    while leaked and time.monotonic() < deadline:
        for thread in leaked:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        leaked = _live_non_daemon() - before
    assert not leaked, f"non-daemon threads left running: {sorted(t.name for t in leaked)}"


@pytest.fixture
def start_thread() -> Iterator[Callable[..., threading.Thread]]:
    """Start ``fn(*args)`` in a plain ``threading.Thread`` (no event loop, no anyio).

    The threads are joined when the test ends; an exception in one fails the test
    (pytest reports it as an unhandled-thread-exception warning, an error here).
    """
    threads: list[threading.Thread] = []

    def start(fn: Callable[..., Any], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=fn, args=args, name=f"test-{fn.__name__}")
        threads.append(thread)
        thread.start()
        return thread

    yield start
    for thread in threads:
        thread.join(JOIN_SECONDS)


@pytest.fixture
def gate() -> Iterator[Gate]:
    """A handshake point for jobs in worker processes (``_handshake.py``); released and
    removed after the test."""
    with Gate() as g:
        yield g


@pytest.fixture
def backstop() -> float:
    """Seconds to wait for anything that should happen at once; a deadlock backstop."""
    return BACKSTOP


def _pgserver() -> Any:
    # tests/queue is not a package: its server module is loaded once, by path, under
    # the name the queue suites import it by, so that every suite shares it.
    module = sys.modules.get("pgserver")
    if module is None:
        path = Path(__file__).resolve().parent / "queue" / "pgserver.py"
        spec = importlib.util.spec_from_file_location("pgserver", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["pgserver"] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The test process's one private PostgreSQL server (queue, AsyncQueue and
    integration suites alike): skipped where none can run, a failure under CI=true."""
    pgserver = _pgserver()
    bindir = pgserver.find_bin()
    missing = None
    if bindir is None:
        missing = "no PostgreSQL server binaries found"
    elif importlib.util.find_spec("psycopg") is None:
        missing = "the psycopg driver is not installed"
    if missing is not None:
        message = f"PostgreSQL tests skipped: {missing}; to run them, {pgserver.ENABLE}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI=true a skip is a failure: {message}")
        pytest.skip(message)
    server = pgserver.PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()

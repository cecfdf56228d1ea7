"""cancelpool's pytest plugin: fixtures for testing code that uses cancelpool.

Loaded automatically once cancelpool is installed (the ``pytest11`` entry point); turn
it off with ``-p no:cancelpool``. The fixtures, each torn down after its test:

``cancelpool_pool``
    A :class:`~cancelpool.CancelPool`, inline (the test mode: jobs run in the test's
    process, with the pool's semantics) unless the test asks for worker processes with
    ``@pytest.mark.cancelpool(inline=False)``. The marker's keywords are the pool's
    options (``workers=1, cancel_grace=0.5, ...``). At the end, running jobs are
    cancelled and the pool is shut down.
``cancelpool_queue_path``
    The path of a fresh queue database in the test's ``tmp_path``.
``cancelpool_queue``
    A :class:`~cancelpool.queue.Queue` on that database.
``cancelpool_server``
    A real ``cancelpool serve`` process on that database, started before the test and
    registered (so submitted jobs run), stopped with SIGTERM after it; its processes are
    checked gone. It allows the tasks matching ``@pytest.mark.cancelpool(allow=[...])``
    (default: every module, ``*:*``) and sees the modules the tests see (the test
    process's ``sys.path``); no ``CANCELPOOL_*`` variable of the test's environment
    reaches it. Its ``.queue`` is the test's queue.

Loading the plugin costs the light ``import cancelpool`` only (the queue, sqlite3 and
psutil are imported by the fixtures that need them): pytest loads every plugin at
start-up, in every project.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cancelpool import CancelPool
    from cancelpool.queue import Queue

#: Seconds a server may take to start and register, or to stop, before the fixture
#: fails. A backstop against a hang: it registers in about a second.
SERVER_BACKSTOP = 60.0
#: Seconds between two looks at "has the server registered?" (a poll with a deadline:
#: there is nothing to wait on across processes). Shorter starts tests sooner.
REGISTER_POLL = 0.02
#: The pool options ``cancelpool_pool`` starts from (a marker's keywords override them).
DEFAULT_POOL_OPTIONS: dict[str, Any] = {"inline": True, "workers": 2}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cancelpool(**options): options of the cancelpool_pool fixture's CancelPool "
        "(inline=False for worker processes), and allow=[patterns] for cancelpool_server",
    )


def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("cancelpool"))):
        if marker.args:
            raise pytest.UsageError(
                "@pytest.mark.cancelpool takes keyword options only "
                f"(inline=..., workers=..., allow=[...]), not {marker.args!r}"
            )
        options.update(marker.kwargs)
    return options


@pytest.fixture
def cancelpool_pool(request: pytest.FixtureRequest) -> Iterator[CancelPool]:
    """A CancelPool for one test: inline unless marked ``cancelpool(inline=False)``."""
    from cancelpool import CancelPool

    options = {**DEFAULT_POOL_OPTIONS, **_marker_options(request)}
    options.pop("allow", None)
    pool = CancelPool(**options)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_pending=True, cancel_running=True)


@pytest.fixture
def cancelpool_queue_path(tmp_path: Path) -> Path:
    """The path of a fresh queue database (in a private directory of ``tmp_path``)."""
    return tmp_path / "cancelpool-queue" / "queue.db"


@pytest.fixture
def cancelpool_queue(cancelpool_queue_path: Path) -> Iterator[Queue]:
    """A Queue on a fresh database, closed after the test."""
    from cancelpool.queue import Queue

    queue = Queue(cancelpool_queue_path)
    try:
        yield queue
    finally:
        queue.close()


class ServerProcess:
    """The ``cancelpool serve`` process of :func:`cancelpool_server`."""

    def __init__(self, proc: subprocess.Popen[str], log: Path, queue: Queue) -> None:
        self.proc = proc
        self.log = log
        self.queue = queue

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def db(self) -> Path | str:
        """The queue database it serves."""
        return self.queue.path

    def output(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it (SIGTERM: running jobs are handled as ``--on-shutdown`` says) and
        return its exit code; killed if it has not exited within the backstop."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(SERVER_BACKSTOP)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(SERVER_BACKSTOP)
            raise AssertionError(
                f"cancelpool serve (pid {self.pid}) did not stop within {SERVER_BACKSTOP}s:\n"
                f"{self.output()}"
            ) from None


@pytest.fixture
def cancelpool_server(
    request: pytest.FixtureRequest, cancelpool_queue: Queue, tmp_path: Path
) -> Iterator[ServerProcess]:
    """A real ``cancelpool serve`` on the test's queue, registered before the test."""
    import psutil

    allow = _marker_options(request).get("allow", ["*:*"])
    if isinstance(allow, str) or not all(isinstance(pattern, str) for pattern in allow):
        raise pytest.UsageError(f"cancelpool(allow=...) takes a list of patterns, not {allow!r}")
    # Not the developer's serve settings ($CANCELPOOL_CONFIG, _HTTP, _PATH, ...: their
    # service's, which would choose this server's code and ports) nor a systemd socket.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CANCELPOOL_") and key != "NOTIFY_SOCKET"
    }
    env["NO_COLOR"] = "1"
    # The server imports the tasks the tests name: let it see what the tests see.
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    command = [sys.executable, "-m", "cancelpool.cli", "serve"]
    command += ["--db", str(cancelpool_queue.path), "--workers", "1"]
    for pattern in allow:
        command += ["--allow", pattern]
    log = tmp_path / "cancelpool-serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
    server = ServerProcess(proc, log, cancelpool_queue)
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + SERVER_BACKSTOP
        while not any(s.pid == proc.pid for s in cancelpool_queue.live_servers(refresh=True)):
            if proc.poll() is not None:
                raise AssertionError(
                    f"cancelpool serve exited with {proc.returncode}:\n{server.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"cancelpool serve did not register within {SERVER_BACKSTOP}s:\n"
                    f"{server.output()}"
                )
            time.sleep(REGISTER_POLL)
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        yield server
    finally:
        if proc.poll() is None:
            server.stop()
        _gone, alive = psutil.wait_procs(family, timeout=SERVER_BACKSTOP)
        for leftover in alive:
            leftover.kill()
        assert not alive, f"cancelpool serve left processes behind: {alive}"

"""Fixtures of the AsyncQueue tests: every test that takes ``db`` runs on SQLite and on
a fresh database of the private PostgreSQL server (tests/queue/pgserver.py), and on
asyncio and trio.

The helpers of the queue suite (its PostgreSQL fixture, its server process wrapper) are
shared, not copied: tests/queue is put on ``sys.path`` as its own conftest does for it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "queue"))

from pgserver import PgServer
from qhelpers import BACKSTOP, DEMO, TASKS, ServerProc, env, wait_for

from cancelpool.queue import Queue


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """asyncio and trio (uvloop adds nothing here: the calls run in threads)."""
    return request.param


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    if store_kind == "sqlite":
        path = tmp_path / "state" / "queue.db"
        Queue(path).close()
        yield path
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.new_db()
    Queue(url).close()
    yield url
    server.drop_db(url)


@pytest.fixture
def start_server(db: Any, tmp_path: Path) -> Iterator[Callable[[], ServerProc]]:
    """``cancelpool serve`` on ``db`` (one worker, the queue suite's and the demo's
    tasks allowed), stopped at the end with nothing of it left."""
    started: list[ServerProc] = []

    def start() -> ServerProc:
        log = tmp_path / f"server-{len(started)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cancelpool.cli",
                    "serve",
                    "--db",
                    str(db),
                    "--workers",
                    "1",
                    "--allow",
                    f"{TASKS}:*",
                    "--allow",
                    f"{DEMO}:*",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env(),
                text=True,
            )
        server = ServerProc(proc, log)
        started.append(server)
        with Queue(db) as queue:

            def registered() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited {proc.returncode}:\n{server.output()}")
                return any(s.pid == proc.pid for s in queue.live_servers(refresh=True))

            wait_for(registered, "the server to register")
        server.remember_children()
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(BACKSTOP)
        server.assert_family_gone()

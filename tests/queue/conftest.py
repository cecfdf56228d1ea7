"""Fixtures of the queue tests: real servers and CLI processes on a db in tmp_path, or
in a fresh database of a private PostgreSQL server.

Every test that uses ``db`` runs on both stores, unless marked ``sqlite_only`` (file
permissions, SQLite's own files). The PostgreSQL server is one per test process
(per pytest-xdist worker), started on first use and removed at the end; each test gets
a database of its own, dropped after it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgserver import PgServer
from qhelpers import BACKSTOP, DEMO, TASKS, Runner, ServerProc, env, wait_for

from cancelpool.queue import Queue


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: a queue test about SQLite's files, not run on PostgreSQL"
    )
    config.addinivalue_line("markers", "pg_only: a queue test of the PostgreSQL store only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" not in metafunc.fixturenames:
        return
    kinds = ["sqlite", "postgresql"]
    if metafunc.definition.get_closest_marker("sqlite_only"):
        kinds = ["sqlite"]
    if metafunc.definition.get_closest_marker("pg_only"):
        kinds = ["postgresql"]
    metafunc.parametrize("store_kind", kinds, scope="function")


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    if store_kind == "sqlite":
        yield tmp_path / "state" / "queue.db"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.new_db()
    Queue(url).close()  # an empty queue (its schema), as a first SQLite open leaves one
    yield url
    server.drop_db(url)


@pytest.fixture
def queue(db: Path) -> Iterator[Queue]:
    q = Queue(db)
    yield q
    q.close()


@pytest.fixture
def cli(db: Path) -> Runner:
    return Runner(db)


@pytest.fixture
def start_server(db: Path, tmp_path: Path, queue: Queue) -> Iterator[Callable[..., ServerProc]]:
    started: list[ServerProc] = []

    def start(
        *args: str,
        allow: tuple[str, ...] = (f"{TASKS}:*", f"{DEMO}:*"),
        extra_env: dict[str, str] | None = None,
        workers: bool = True,
    ) -> ServerProc:
        log = tmp_path / f"server-{len(started)}.log"
        allow_args = [a for pattern in allow for a in ("--allow", pattern)]
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cancelpool.cli",
                    "serve",
                    "--db",
                    str(db),
                    *(["--workers", "1"] if workers else []),
                    *allow_args,
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**env(), **(extra_env or {})},
                text=True,
            )
        server = ServerProc(proc, log)
        started.append(server)

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
            server.proc.kill()
            server.proc.wait(BACKSTOP)
        server.assert_family_gone()

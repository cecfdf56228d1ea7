"""Fixtures of the queue tests: real servers and CLI processes on a db in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from qhelpers import BACKSTOP, DEMO, TASKS, Runner, ServerProc, env, wait_for

from cancelpool.queue import Queue


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "queue.db"


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

    def start(*args: str, allow: tuple[str, ...] = (f"{TASKS}:*", f"{DEMO}:*")) -> ServerProc:
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
                    "--workers",
                    "1",
                    *allow_args,
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env(),
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

"""Fixtures of the dashboard tests: a real queue, ``cancelpool serve``, ``cancelpool web``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from webhelpers import TOKEN, Proc, url_of, wait_for

from _leaks import assert_no_new_shm, dev_shm

pytest.importorskip("starlette", reason="the web extra is not installed")
pytest.importorskip("uvicorn", reason="the web extra is not installed")

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
def server(db: Path, tmp_path: Path, queue: Queue) -> Iterator[Proc]:
    """``cancelpool serve`` allowing the tests' tasks and the demo tasks; at the end it
    is stopped and neither a process nor a /dev/shm segment of it is left."""
    shm_before = dev_shm()
    proc = Proc(
        [
            "serve",
            "--db",
            str(db),
            "--workers",
            "1",
            "--quiet",
            "--allow",
            "webtasks:*",
            "--allow",
            "cancelpool.demo_tasks:*",
        ],
        tmp_path / "serve.log",
    )

    def registered() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.proc.returncode}:\n{proc.output()}")
        return any(s.pid == proc.proc.pid for s in queue.live_servers(refresh=True))

    try:
        wait_for(registered, "the server to register")
        proc.remember_family()
        yield proc
    finally:
        assert proc.stop() == 0, proc.output()
        assert_no_new_shm(shm_before)


@pytest.fixture
def web(db: Path, tmp_path: Path, queue: Queue) -> Iterator[str]:
    """``cancelpool web`` on a free port; yields its base URL (``http://127.0.0.1:N/``)."""
    proc = Proc(
        ["web", "--db", str(db), "--bind", "127.0.0.1:0", "--token", TOKEN],
        tmp_path / "web.log",
    )
    try:
        yield url_of(proc.first_line())
    finally:
        code = proc.stop()
        log = proc.output()
        assert "Traceback" not in log, log
        assert code == 0, log

"""A client whose PostgreSQL backend was cut off (``pg_terminate_backend``): its next
call reconnects and succeeds, retried once where that is safe (see ``PostgresStore``)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pgserver import PgServer
from qhelpers import BACKSTOP, env

from cancelpool.queue import JobStatus, Queue
from cancelpool.queue._exceptions import QueueUnavailable

pytestmark = pytest.mark.pg_only

ADD = "cancelpool.demo_tasks:add"


def _backend_pid(queue: Queue) -> int:
    store: Any = queue.store
    return int(store._read(lambda tx: tx.rows("SELECT pg_backend_pid() AS pid"))[0]["pid"])


def _kill_backend(pg_server: PgServer, pid: int) -> None:
    import psycopg

    with psycopg.connect(pg_server.admin_url(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert row == (True,)
        # Terminated means gone: wait until the server no longer lists it.
        for _ in range(1000):
            if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                return
            conn.execute("SELECT pg_sleep(0.005)")  # the server's clock, not a handoff
    raise AssertionError(f"backend {pid} still listed")


def test_every_kind_of_call_succeeds_right_after_the_backend_was_killed(
    db: str, queue: Queue, pg_server: PgServer
) -> None:
    first = queue.submit(ADD, 1, 2, name="user_1_a")
    calls = [
        ("get", lambda: queue.get(first).status),  # type: ignore[union-attr]
        ("submit", lambda: queue.submit(ADD, 3, 4, name="user_1_b")),
        ("list", lambda: [job.id for job in queue.list()]),
        ("statistics", lambda: queue.statistics().queued),
        ("nodes", lambda: queue.nodes()),
        ("cancel", lambda: queue.cancel(first)),
        ("cancel_all", lambda: queue.cancel_all("user_1_*")),
    ]
    results = {}
    for what, call in calls:
        before = _backend_pid(queue)
        _kill_backend(pg_server, before)
        results[what] = call()  # no QueueUnavailable: reconnected and retried once
        assert _backend_pid(queue) != before, what
    second = results["submit"]
    assert results["get"] is JobStatus.QUEUED
    assert results["list"] == [first, second]  # the retried submit added one job
    assert results["statistics"] == 2
    assert results["nodes"] == ()
    assert results["cancel"] == 1
    assert results["cancel_all"] == 1  # the other one: the first was cancelled already
    assert [job.status for job in queue.list()] == [JobStatus.CANCELLED] * 2


def test_a_write_is_retried_exactly_once(db: str, queue: Queue) -> None:
    store: Any = queue.store
    attempts: list[int] = []

    def cut_off_each_time(tx: Any) -> None:
        attempts.append(1)
        tx.rows("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(QueueUnavailable, match="cannot be reached"):
        store._write(cut_off_each_time)
    assert len(attempts) == 2
    assert queue.list() == []  # and the connection after that works again


def test_cli_watch_survives_its_backend_being_killed(
    db: str, queue: Queue, pg_server: PgServer
) -> None:
    job = queue.submit(ADD, 1, 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cancelpool.cli", "watch", str(job), "--json", "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # the handshake: it is watching
        assert first["status"] == "queued", first
        import psycopg

        with psycopg.connect(pg_server.admin_url(), autocommit=True) as conn:
            pids = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'cancelpool' "
                    "AND pid <> %s",
                    (_backend_pid(queue),),
                )
            ]
        assert len(pids) == 1, pids  # the watcher's connection
        _kill_backend(pg_server, pids[0])
        assert queue.cancel(job) == 1
        out, err = proc.communicate(timeout=BACKSTOP)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["status"] == "cancelled"
    assert "cannot be reached" not in err

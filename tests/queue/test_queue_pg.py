"""The PostgreSQL store as several nodes see it: real ``cancelpool serve`` processes on
a private PostgreSQL server (see conftest), the CLI in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from pgserver import PASSWORD, PgServer
from qhelpers import BACKSTOP, Runner, ServerProc, env, wait_for, wait_status

from cancelpool.queue import JobStatus, Queue
from cancelpool.queue._states import TRANSITIONS, allowed, sources

pytestmark = pytest.mark.pg_only

T = "qtasks_pg"


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m cancelpool.cli ARGV...`` as given (for verbs of groups: ``db upgrade``)."""
    return subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", *argv],
        capture_output=True,
        text=True,
        env=env(),
        timeout=BACKSTOP,
    )


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_state_machine_table_is_closed_and_final_states_have_no_exit(store_kind: str) -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    for status in JobStatus:
        if status.finished:
            assert not TRANSITIONS[status]
    assert allowed("queued", "running")
    assert not allowed("completed", "running")
    assert sources("completed") == ("running",)
    assert set(sources("cancelled")) == {"queued", "running"}


def test_password_is_never_printed(db: str, cli: Runner, pg_server: PgServer) -> None:
    assert PASSWORD in db
    outputs = [
        cli("submit", "cancelpool.demo_tasks:add", "[1, 2]", "--json"),
        cli("ls"),
        cli("ls", "--json"),
        cli("stats"),
        cli("stats", "--json"),
        cli("nodes"),
        cli("nodes", "--json"),
        cli("result", "999"),
        run_cli("db", "upgrade", "--db", db),
    ]
    with Queue(db) as q:
        assert PASSWORD not in repr(q)
        assert PASSWORD not in str(q.path)
    dead = db.replace(f":{pg_server.port}/", f":{_closed_port()}/")
    outputs.append(Runner(dead)("ls"))  # type: ignore[arg-type]
    outputs.append(Runner(dead)("serve", "--allow", "x:*"))  # type: ignore[arg-type]
    for out in outputs:
        assert PASSWORD not in out.stdout + out.stderr, out
        assert "Traceback" not in out.stderr, out
    assert outputs[-1].returncode == 1
    assert "cannot be reached" in outputs[-1].stderr


def test_a_password_in_the_query_string_is_never_printed(
    db: str, cli: Runner, pg_server: PgServer
) -> None:
    # libpq also takes the password as a parameter: ?password=... (and sslpassword).
    in_query = db.replace(f":{PASSWORD}@", "@") + f"?password={PASSWORD}&sslpassword={PASSWORD}"
    assert in_query.count(PASSWORD) == 2
    assert f":{PASSWORD}@" not in in_query
    query_cli = Runner(in_query)  # type: ignore[arg-type]
    outputs = [query_cli("ls"), query_cli("ls", "--json"), query_cli("stats", "--json")]
    outputs += [query_cli("nodes", "--json"), query_cli("health")]
    dead = in_query.replace(f":{pg_server.port}/", f":{_closed_port()}/")
    outputs.append(Runner(dead)("ls"))  # type: ignore[arg-type]
    for out in outputs:
        assert PASSWORD not in out.stdout + out.stderr, out
        assert "Traceback" not in out.stderr, out
    assert outputs[0].returncode == 0, outputs[0]
    assert outputs[-1].returncode == 1
    assert "password=***" in outputs[-1].stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once we return


def test_db_upgrade_schema_and_missing_queue(db: str, cli: Runner) -> None:
    out = cli("ls", "--pg-schema", "other")
    assert out.returncode == 3, out
    assert "db upgrade" in out.stderr
    first = run_cli("db", "upgrade", "--db", db, "--pg-schema", "other")
    assert first.returncode == 0, first
    assert "created at version 2" in first.stdout
    again = run_cli("db", "upgrade", "--db", db, "--pg-schema", "other")
    assert again.returncode == 0, again
    assert "already at version 2" in again.stdout
    assert (
        cli("submit", "cancelpool.demo_tasks:add", "[1, 2]", "--pg-schema", "other").returncode == 0
    )
    with Queue(db, pg_schema="other") as other:
        assert len(other.list()) == 1
    with Queue(db) as default:
        assert default.list() == []  # schemas are separate queues
    bad = cli("ls", "--pg-schema", "x; DROP TABLE jobs")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


def test_two_nodes_racing_never_start_a_job_twice(
    db: str, queue: Queue, start_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    release = tmp_path / "release"
    a = start_server("--node-name", "a", "--concurrency", "4", allow=(f"{T}:*",))
    b = start_server("--node-name", "b", "--concurrency", "4", allow=(f"{T}:*",))
    # Eight holders fill both nodes (four each), so both take part; then a burst.
    held = [queue.submit(f"{T}:hold_until", str(log), f"h{i}", str(release)) for i in range(8)]
    wait_for(lambda: len(lines(log)) == 8, "both nodes to fill up")
    ids = [queue.submit(f"{T}:run_once", str(log), f"j{i}") for i in range(300)]
    release.touch()
    for job_id in held + ids:
        assert queue.wait(job_id, timeout=BACKSTOP).status is JobStatus.COMPLETED
    runs = Counter(lines(log))
    assert len(runs) == 308
    assert set(runs.values()) == {1}, runs.most_common(3)
    owners = Counter(job.owner for job in queue.list())
    assert len(owners) == 2, owners
    assert a.stop() == 0
    assert b.stop() == 0


def test_nodes_lists_live_nodes(
    db: str, cli: Runner, start_server: Callable[..., ServerProc]
) -> None:
    server = start_server("--node-name", "east-1")
    out = cli("nodes", "--json")
    assert out.returncode == 0, out
    nodes = json.loads(out.stdout)["nodes"]
    assert [(n["pid"], n["label"], n["running"]) for n in nodes] == [(server.pid, "east-1", 0)]
    text = cli("nodes").stdout
    assert "east-1" in text
    assert str(server.pid) in text
    assert server.stop() == 0
    assert json.loads(cli("nodes", "--json").stdout)["nodes"] == []


def _three_nodes_holding(
    queue: Queue, start_server: Callable[..., ServerProc], log: Path, n: int
) -> tuple[list[ServerProc], list[int]]:
    servers = [
        start_server("--node-name", f"n{i}", "--concurrency", str(n), allow=(f"{T}:*",))
        for i in range(3)
    ]
    ids = [queue.submit(f"{T}:hold", str(log), f"h{i}", name=f"user_42_{i}") for i in range(3 * n)]
    wait_for(lambda: len(lines(log)) == 3 * n, "every job to start")
    return servers, ids


def test_pattern_cancel_reaches_jobs_on_all_nodes(
    db: str, queue: Queue, start_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    log = tmp_path / "held.log"
    servers, ids = _three_nodes_holding(queue, start_server, log, 2)
    owners = {queue.get(i).owner for i in ids}  # type: ignore[union-attr]
    assert len(owners) == 3, owners
    other = queue.submit(f"{T}:hold", str(log), "other", name="user_7_x")  # queued: full
    assert queue.cancel_all("user_42_*") == 6
    for job_id in ids:
        job = wait_status(queue, job_id, "cancelled")
        assert job.partial_result == {"tag": f"h{ids.index(job_id)}"}
    wait_for(lambda: "other" in lines(log), "the job the pattern left out to start")
    assert queue.get(other).status is JobStatus.RUNNING  # type: ignore[union-attr]
    for server in servers:
        assert server.stop() == 0


def test_parent_cancel_cascades_across_nodes(
    db: str, queue: Queue, start_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    log = tmp_path / "held.log"
    servers = [start_server("--concurrency", "1", allow=(f"{T}:*",)) for _ in range(2)]
    parent = queue.submit(f"{T}:hold", str(log), "parent")
    wait_for(lambda: "parent" in lines(log), "the parent to start")
    child = queue.submit(f"{T}:hold", str(log), "child", parent=parent)
    wait_for(lambda: "child" in lines(log), "the child to start")
    assert queue.get(parent).owner != queue.get(child).owner  # type: ignore[union-attr]
    queue.cancel(parent)
    assert wait_status(queue, child, "cancelled").cancel_reason == "parent"
    assert wait_status(queue, parent, "cancelled")
    for server in servers:
        assert server.stop() == 0


def test_cancel_without_notification_arrives_by_poll(
    db: str,
    queue: Queue,
    start_server: Callable[..., ServerProc],
    tmp_path: Path,
    pg_server: PgServer,
) -> None:
    import psycopg

    log = tmp_path / "held.log"
    server = start_server(allow=(f"{T}:*",))
    job = queue.submit(f"{T}:hold", str(log), "x")
    wait_for(lambda: "x" in lines(log), "the job to start")
    # Cut the node's connections off (its listener too), and write the request as a
    # client whose NOTIFY was lost: only the node's poll can find it.
    assert pg_server.kill_connections(db, "cancelpool-serve-") >= 1
    with psycopg.connect(db, autocommit=True, options="-c search_path=cancelpool") as conn:
        conn.execute(
            "UPDATE jobs SET cancel_requested = 1, cancel_message = 'lost' WHERE id = %s", (job,)
        )
    assert wait_status(queue, job, "cancelled").cancel_message == "lost"
    assert server.stop() == 0


def test_a_job_inserted_without_notification_is_claimed_by_poll(
    db: str, queue: Queue, start_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    import psycopg

    log = tmp_path / "runs.log"
    server = start_server(allow=(f"{T}:*",))
    first = queue.submit(f"{T}:run_once", str(log), "notified")
    assert queue.wait(first, timeout=BACKSTOP).status is JobStatus.COMPLETED
    # A row written by hand sends no NOTIFY: only the node's poll fallback can claim it
    # (claims otherwise follow notifications).
    with psycopg.connect(db, autocommit=True, options="-c search_path=cancelpool") as conn:
        row = conn.execute(
            "INSERT INTO jobs (task, args, kwargs, submitted_at) VALUES (%s, %s, '{}', 0) "
            "RETURNING id",
            (f"{T}:run_once", json.dumps([str(log), "by-hand"])),
        ).fetchone()
    assert row is not None
    assert wait_status(queue, row[0], "completed").result == "by-hand"
    assert lines(log) == ["notified", "by-hand"]
    assert server.stop() == 0


def test_sigkill_of_a_node_its_jobs_recovered_by_another(
    db: str, queue: Queue, start_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    log = tmp_path / "held.log"
    release = tmp_path / "release"
    victim = start_server("--concurrency", "4", allow=(f"{T}:*",))
    ids = [queue.submit(f"{T}:hold_until", str(log), f"v{i}", str(release)) for i in range(3)]
    doomed = queue.submit(f"{T}:hold_until", str(log), "cancel-me", str(release))
    wait_for(lambda: len(lines(log)) == 4, "the victim to start its jobs")
    # The whole process group of the node: serve and its workers.
    family = [victim.pid, *(p.pid for p in victim.family)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    victim.proc.wait(BACKSTOP)
    assert queue.cancel(doomed) == 1  # requested while nobody runs it: the cancel wins
    rescuer = start_server("--concurrency", "8", allow=(f"{T}:*",))
    release.touch()
    for job_id in ids:
        job = wait_status(queue, job_id, "completed")
        assert job.attempts == 2
    assert queue.wait(doomed, timeout=BACKSTOP).status is JobStatus.CANCELLED
    assert Counter(lines(log))["cancel-me"] == 1  # never started again
    assert rescuer.stop() == 0
    victim.assert_family_gone()


def test_postgres_restart_mid_batch_nothing_lost_or_doubled(
    db: str,
    queue: Queue,
    start_server: Callable[..., ServerProc],
    tmp_path: Path,
    pg_server: PgServer,
) -> None:
    log = tmp_path / "runs.log"
    servers = [start_server("--concurrency", "4", allow=(f"{T}:*",)) for _ in range(2)]
    first = [queue.submit(f"{T}:run_once", str(log), f"a{i}") for i in range(50)]
    for job_id in first:
        queue.wait(job_id, timeout=BACKSTOP)
    queue.close()
    pg_server.restart()
    with Queue(db) as again:
        rest = [again.submit(f"{T}:run_once", str(log), f"b{i}") for i in range(50)]
        for job_id in first + rest:
            assert again.wait(job_id, timeout=BACKSTOP).status is JobStatus.COMPLETED
    runs = Counter(lines(log))
    assert len(runs) == 100
    assert set(runs.values()) == {1}
    for server in servers:
        assert server.proc.poll() is None, server.output()
        assert server.stop() == 0

"""Server liveness is derived, rows are not trusted, and no wait is silent.

Real servers (killed with SIGKILL, some left as zombies), real CLI processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from qhelpers import BACKSTOP, DEMO, TASKS, ServerProc, env, wait_for, wait_progress, wait_status

from cancelpool.cli import EXIT_NOT_FINISHED


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.sqlite_only  # SQLite liveness is the process; PostgreSQL's is the lease
def test_a_zombie_server_is_dead_and_its_jobs_are_recovered(cli, queue, start_server) -> None:
    server = start_server()
    job_id = queue.submit(f"{TASKS}:checkpoint_then_wait", "/nonexistent/never")
    wait_progress(queue, job_id)
    os.kill(server.pid, signal.SIGKILL)  # and do not reap it: it stays a zombie
    wait_for(lambda: psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE, "the zombie")
    assert queue.live_servers(refresh=True) == ()
    assert json.loads(cli("stats", "--json").stdout)["servers"] == []
    start_server()  # the next server start recovers the zombie's job
    job = wait_for(lambda: (j := queue.get(job_id)).attempts == 2 and j, "the job to restart")
    assert job.partial_result == {"stage": 1}
    assert psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE  # still not reaped
    queue.cancel(job_id)
    wait_status(queue, job_id, "cancelled")


def _plant_server_row(db: Path, server_id: str, wake: str) -> None:
    me = psutil.Process()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO servers (id, pid, proc_start, wake_path, allow, workers, started_at, "
            "heartbeat) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
            (server_id, me.pid, me.create_time(), wake, f'["{DEMO}:*"]', time.time(), time.time()),
        )
    conn.close()


@pytest.mark.sqlite_only  # writes or reads SQLite rows/files directly
def test_rows_of_the_servers_table_are_not_trusted(cli, db, queue, start_server, tmp_path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # A row naming a live process of ours (this test) and a file to poke and unlink.
    _plant_server_row(db, "abcdefabcdef", str(victim))
    # A row whose derived FIFO path holds a regular file instead of a FIFO.
    ctl = db.with_name(db.name + ".ctl")
    ctl.mkdir(mode=0o700, exist_ok=True)
    decoy = ctl / "0123456789ab.wake"
    decoy.write_text("not a fifo")
    _plant_server_row(db, "0123456789ab", str(decoy))
    _plant_server_row(db, "../../../etc", "/etc/passwd")  # not an id a server gives itself

    assert queue.live_servers(refresh=True) == ()  # no FIFO reader: not alive
    out = cli("submit", f"{DEMO}:add", "[1, 2]")
    assert out.returncode == 0, out.stderr
    out = cli("cancel", "--pattern", "*")
    assert out.returncode == 0, out.stderr
    start_server()  # recovers the planted rows as dead servers
    wait_for(
        lambda: (
            {s.id for s in queue.store.servers(live_only=False) if s.stopped_at}
            >= {"abcdefabcdef", "0123456789ab"}
        ),
        "the planted rows to be recovered",
    )
    assert victim.read_text() == "precious"
    assert decoy.read_text() == "not a fifo"  # neither written to nor unlinked


def test_submit_wait_without_a_server_says_so(cli, queue) -> None:
    out = cli("submit", f"{DEMO}:add", "[1, 2]", "--wait")
    assert out.returncode == EXIT_NOT_FINISHED, (out.stdout, out.stderr)
    line = _one_line(out.stderr)
    assert "is queued and no live server serves" in line
    assert "--keep-waiting" in line
    assert [job.status.value for job in queue.list()] == ["queued"]


def test_keep_waiting_waits_for_a_server_and_says_so(db, queue, start_server) -> None:
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cancelpool.cli",
            "submit",
            "--db",
            str(db),
            f"{DEMO}:add",
            "[1, 2]",
            "--wait",
            "--keep-waiting",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
        text=True,
    )
    try:
        assert waiter.stderr is not None
        notice = waiter.stderr.readline()  # the handshake: it told us, and waits on
        assert "no live server serves" in notice
        assert "waiting for a server" in notice
        assert waiter.poll() is None
        start_server()
        stdout, stderr = waiter.communicate(timeout=BACKSTOP)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, stderr
    assert stdout.strip() == "3"


@pytest.fixture
def orphan(queue, start_server) -> int:
    """A job left ``running`` by a server killed with SIGKILL (and reaped)."""
    server = start_server()
    job_id = queue.submit(f"{TASKS}:checkpoint_then_wait", "/nonexistent/never")
    wait_progress(queue, job_id)
    server.stop(signal.SIGKILL)
    server.assert_family_gone()
    assert queue.get(job_id).status == "running"
    return job_id


def test_result_wait_on_the_job_of_a_dead_server_says_so(cli, queue, orphan) -> None:
    out = cli("result", str(orphan), "--wait")
    assert out.returncode == EXIT_NOT_FINISHED, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert "which is no longer alive" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert queue.get(orphan).status == "running"  # a wait changes nothing


def test_cancel_wait_of_the_job_of_a_dead_server_returns_it_cancelled(cli, queue, orphan) -> None:
    out = cli("cancel", str(orphan), "--wait")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "1 running (stopped)" in out.stdout
    job = queue.get(orphan)
    assert job.status == "cancelled"
    assert job.cancel_reason == "manual"
    assert job.partial_result == {"stage": 1}  # its last checkpoint is kept


def test_queue_wait_need_server(queue) -> None:
    from cancelpool.queue import NoLiveServer

    job_id = queue.submit(f"{DEMO}:add", 1, 2)
    with pytest.raises(NoLiveServer, match="no live server serves"):
        queue.wait(job_id, timeout=BACKSTOP, need_server=True)
    assert queue.unserved_reason(job_id) is not None


# -- the import path ---------------------------------------------------------------------

PLANTED = """
import os
with open(os.environ["CANCELPOOL_TEST_MARKER"], "a") as f:
    f.write(__name__ + " was imported from " + __file__ + "\\n")

async def run():
    return "ran"
"""


def _serve_in(cwd: Path, db: Path, log: Path, *args: str) -> ServerProc:
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
                "planted_task:*",
                "--allow",
                f"{DEMO}:*",
                *args,
            ],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env(),
        )
    return ServerProc(proc, log)


def test_serve_never_imports_from_its_working_directory(db, queue, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("CANCELPOOL_TEST_MARKER", str(marker))
    shared = tmp_path / "shared"  # where another user could drop files
    shared.mkdir()
    (shared / "planted_task.py").write_text(PLANTED)
    (shared / "uvloop.py").write_text(PLANTED)  # the workers import uvloop when they start
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "planted_task.py").write_text(PLANTED)

    servers = [_serve_in(shared, db, tmp_path / "serve-1.log")]
    try:
        wait_for(lambda: queue.live_servers(refresh=True), "the server to register")
        servers[0].remember_children()
        job = queue.wait(queue.submit("planted_task:run"), timeout=BACKSTOP)
        assert job.status == "failed"
        assert "cannot import module 'planted_task'" in (job.error or "")
        assert queue.wait(queue.submit(f"{DEMO}:add", 1, 2), timeout=BACKSTOP).result == 3
        assert not marker.exists(), marker.read_text()
        assert servers[0].stop() == 0

        # --path DIR is how a server imports from a directory of its choosing.
        servers.append(_serve_in(shared, db, tmp_path / "serve-2.log", "--path", str(lib)))
        wait_for(lambda: queue.live_servers(refresh=True), "the second server to register")
        servers[1].remember_children()
        assert queue.wait(queue.submit("planted_task:run"), timeout=BACKSTOP).result == "ran"
        # Imported from --path only: once by the server (which looks whether the allowed
        # task is a plain function, docs/security.md) and once by the worker that ran it.
        imports = marker.read_text().splitlines()
        assert imports, "the task ran, so it was imported"
        assert set(imports) == {f"planted_task was imported from {lib / 'planted_task.py'}"}
        assert servers[1].stop() == 0
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()
    for server in servers:
        server.assert_family_gone()


def test_a_path_others_can_write_is_refused(cli, tmp_path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    out = cli("serve", "--allow", f"{DEMO}:*", "--path", str(open_dir))
    assert out.returncode == 3, out
    assert "can be written by other users" in _one_line(out.stderr)
    out = cli("serve", "--allow", f"{DEMO}:*", "--path", str(tmp_path / "missing"))
    assert out.returncode == 3, out
    assert "No such file or directory" in _one_line(out.stderr)

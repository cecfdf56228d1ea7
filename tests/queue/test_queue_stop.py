"""How ``cancelpool serve`` stops jobs and itself (issue 8 items 7 and 8).

Plain functions run alone in a worker thread, so a job that blocks another worker's
event loop cannot get them force-stopped; ``--cancel-grace`` bounds how long a job may
ignore its cancel; a forced stop shows in ls, result and --json. SIGTERM and Ctrl-C
(SIGINT to the whole process group, as a terminal sends it) stop the server without a
traceback, in every mode, and every process it started is gone when its exit is seen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from qhelpers import BACKSTOP, env, wait_for, wait_status

from cancelpool.queue import Queue

MORE = "qtasks_more"


class Serve:
    """``cancelpool serve`` in its own session (so a test can Ctrl-C its whole group)."""

    def __init__(self, db: Path, log: Path, *args: str) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cancelpool.cli",
                    "serve",
                    "--db",
                    str(db),
                    "--allow",
                    f"{MORE}:*",
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env(),
                start_new_session=True,
            )
        self.family: list[psutil.Process] = []

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def remember_family(self) -> None:
        self.family = psutil.Process(self.proc.pid).children(recursive=True)
        assert self.family, "the server has started no process"

    def stop(self, how: str) -> int:
        if how == "ctrl-c":
            os.killpg(self.proc.pid, signal.SIGINT)  # what a terminal does: the group
        else:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(BACKSTOP)

    def left_behind(self) -> list[psutil.Process]:
        alive = []
        for proc in self.family:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        return alive


@pytest.fixture
def serve(db: Path, tmp_path: Path, queue: Queue) -> Iterator[object]:
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        server = Serve(db, tmp_path / f"serve-{len(started)}.log", *args)
        started.append(server)

        def registered() -> bool:
            if server.proc.poll() is not None:
                raise AssertionError(f"serve exited {server.proc.returncode}:\n{server.output()}")
            return any(s.pid == server.proc.pid for s in queue.live_servers(refresh=True))

        wait_for(registered, "the server to register")
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(BACKSTOP)
        _, alive = psutil.wait_procs(server.family, timeout=BACKSTOP)
        assert not alive, f"left behind: {alive}"


def _ready(tmp_path: Path, tag: str) -> str:
    return str(tmp_path / f"{tag}.ready")


@pytest.mark.parametrize(
    ("how", "on_shutdown", "task"),
    [
        ("sigterm", "requeue", "stubborn_sync"),
        ("sigterm", "cancel", "stubborn_sync"),
        ("ctrl-c", "requeue", "stubborn_sync"),
        ("ctrl-c", "cancel", "polite"),
        ("sigterm", "requeue", "polite_sync"),
    ],
)
def test_a_stopped_server_leaves_no_process_and_no_traceback(
    serve, queue, tmp_path, how, on_shutdown, task
) -> None:
    server = serve(
        "--workers", "2", "--on-shutdown", on_shutdown, "--grace", "0.2", "--cancel-grace", "0.5"
    )
    ready = _ready(tmp_path, "job")
    job_id = queue.submit(f"{MORE}:{task}", ready)
    wait_for(lambda: os.path.exists(ready), "the job to run")
    server.remember_family()
    assert server.stop(how) == 0, server.output()
    assert server.left_behind() == []  # gone before serve's exit was seen
    log = server.output()
    assert "Traceback" not in log
    assert "supervisor thread failed" not in log
    assert "stopped:" in log
    job = queue.get(job_id)
    assert job.status == ("queued" if on_shutdown == "requeue" else "cancelled")
    if task != "stubborn_sync":  # a job that listens keeps its checkpoint
        assert job.partial_result is not None


def test_a_plain_task_runs_alone_beside_a_loop_blocker(serve, queue, tmp_path) -> None:
    serve("--workers", "2", "--cancel-grace", "1")
    release = str(tmp_path / "release")
    blocker = queue.submit(f"{MORE}:block_loop", release)
    wait_for(lambda: os.path.exists(release + ".blocking"), "the blocker to run")
    ready = _ready(tmp_path, "polite")
    plain = queue.submit(f"{MORE}:polite_sync", ready)
    wait_for(lambda: os.path.exists(ready), "the plain job to run")
    queue.cancel(plain)
    job = wait_status(queue, plain, "cancelled")
    # In the blocker's loop it could not have reported its stop: it would have been
    # force-stopped after the grace, its partial result the last checkpoint at best.
    assert not job.forced, job.error
    assert job.error is None
    assert job.partial_result == {"polite_sync": True}
    Path(release).touch()
    assert wait_status(queue, blocker, "completed").result == "unblocked"


def test_a_plain_task_never_shares_a_blocked_loop(serve, queue, tmp_path) -> None:
    serve("--workers", "1", "--cancel-grace", "1")
    release = str(tmp_path / "release")
    blocker = queue.submit(f"{MORE}:block_loop", release)
    wait_for(lambda: os.path.exists(release + ".blocking"), "the blocker to run")
    ready = _ready(tmp_path, "polite")
    plain = queue.submit(f"{MORE}:polite_sync", ready)
    wait_status(queue, plain, "running")  # claimed; the pool keeps it for an idle worker
    queue.cancel(plain)
    job = wait_status(queue, plain, "cancelled")
    # Sent into the blocked loop, it would have been force-stopped after the grace.
    assert not job.forced, job.error
    assert not os.path.exists(ready)  # it never started: no worker was free for it alone
    Path(release).touch()
    assert wait_status(queue, blocker, "completed").result == "unblocked"


def test_a_forced_stop_shows_in_ls_result_and_json(serve, cli, queue, tmp_path) -> None:
    serve("--workers", "1", "--cancel-grace", "0.3")
    ready = _ready(tmp_path, "stubborn")
    job_id = queue.submit(f"{MORE}:stubborn_sync", ready, name="stubborn")
    wait_for(lambda: os.path.exists(ready), "the job to run")
    assert cli("cancel", str(job_id)).returncode == 0
    job = wait_status(queue, job_id, "cancelled")
    assert job.forced
    out = cli("result", str(job_id))
    assert out.returncode == 5
    assert out.stderr.startswith(f"job {job_id} cancelled (manual, forced: its worker was killed)")
    data = json.loads(cli("result", str(job_id), "--json").stdout)
    assert data["forced"] is True
    assert data["error"].startswith("forced stop: it ignored its cancellation for 0.3 s")
    assert "manual, forced" in cli("ls").stdout
    assert json.loads(cli("ls", "--json").stdout)[0]["forced"] is True
    # The server goes on: a new worker runs the next job.
    assert wait_status(queue, queue.submit(f"{MORE}:shout_result"), "completed")


def test_a_job_that_listens_is_not_force_stopped_for_a_loop_blocker(serve, queue, tmp_path) -> None:
    serve("--workers", "1", "--concurrency", "4", "--cancel-grace", "1")
    release = str(tmp_path / "release")
    ready = _ready(tmp_path, "polite")
    polite = queue.submit(f"{MORE}:polite", ready)
    wait_for(lambda: os.path.exists(ready), "the polite job to run")
    blocker = queue.submit(f"{MORE}:block_loop", release)  # same worker, same loop
    wait_for(lambda: os.path.exists(release + ".blocking"), "the blocker to run")
    queue.cancel(polite)
    job = wait_status(queue, polite, "cancelled", "failed")
    try:
        assert job.status == "cancelled"
        assert not job.forced, job.error  # the blocker is to blame, not the polite job
        assert job.partial_result == {"polite": True}
        blamed = wait_status(queue, blocker, "failed", "cancelled")
        assert "block" in (blamed.error or "")
    finally:
        Path(release).touch()

"""``cancelpool demo``: a real server on a temporary queue, driven like a user would.

It starts ``cancelpool serve`` as a child process, submits a batch of demo tasks,
cancels some of them while they run (by name pattern, and a parent with its children),
lets one time out and one fail, then prints the outcome table and stops the server with
SIGTERM. The temporary directory and every process are gone when it returns.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._client import Queue
from ._format import visible
from ._model import JobRecord, JobStatus

TASKS = "cancelpool.demo_tasks"
#: Backstops, not schedule: the demo takes about five seconds; these only stop it from
#: hanging on a broken machine.
SERVER_START_TIMEOUT = 30.0
DEMO_TIMEOUT = 45.0
SERVER_STOP_TIMEOUT = 15.0


def run_demo(workers: int, *, watch: Callable[..., None]) -> int:
    """Run the demo; ``watch`` is the CLI's watch loop (a live view on a terminal).
    Returns the exit status."""
    from ._render import jobs_table, new_console

    console = new_console()
    tmp = Path(tempfile.mkdtemp(prefix="cancelpool-demo-"))
    db = tmp / "demo.db"
    log_path = tmp / "server.log"
    server: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cancelpool.cli",
                    "serve",
                    "--db",
                    str(db),
                    "--workers",
                    str(workers),
                    "--allow",
                    f"{TASKS}:*",
                    "--grace",
                    "5",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        with Queue(db) as queue:
            _wait_for_server(queue, server, log_path)
            click.echo(f"$ cancelpool serve --db {db} --workers {workers} --allow '{TASKS}:*'")
            ids = _submit_batch(queue)
            click.echo(
                f"$ cancelpool submit ...   -> {len(ids)} jobs (ids {min(ids.values())}"
                f"-{max(ids.values())})"
            )
            script = _Script(queue, ids)
            watch(
                queue,
                list(ids.values()),
                timeout=DEMO_TIMEOUT,
                as_json=False,
                on_tick=script.tick,
                erase=True,
            )
            click.echo("")
            click.echo("$ cancelpool ls")
            jobs = queue.list()
            console.print(jobs_table(jobs, console.width))
            counts = queue.statistics()
            click.echo(
                f"\n{counts.completed} completed, {counts.cancelled} cancelled "
                f"(with partial results), {counts.failed} failed."
            )
            for line in stop_report(jobs, script.cancelled_at):
                click.echo(line)
        return 0
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_server(queue: Queue, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not queue.live_servers(refresh=True):
        if server.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException(
                "the demo server did not start:\n" + log_path.read_text(errors="replace")
            )
        time.sleep(0.02)  # polling the db for the server's registration


def _submit_batch(queue: Queue) -> dict[str, int]:
    ids: dict[str, int] = {}
    for n in (1, 2, 3):
        ids[f"user_42_report_{n}"] = queue.submit(
            f"{TASKS}:crunch", 40, 0.1, name=f"user_42_report_{n}"
        )
    for n in (1, 2):
        ids[f"user_7_report_{n}"] = queue.submit(
            f"{TASKS}:crunch", 10 + 5 * n, 0.1, name=f"user_7_report_{n}"
        )
    parent = ids["pipeline"] = queue.submit(f"{TASKS}:fetch_pages", 60, 0.1, name="pipeline")
    for n in (1, 2):
        ids[f"pipeline.step_{n}"] = queue.submit(
            f"{TASKS}:crunch", 60, 0.1, name=f"pipeline.step_{n}", parent=parent
        )
    ids["slow_download"] = queue.submit(
        f"{TASKS}:fetch_pages", 100, 0.1, name="slow_download", timeout=1.5
    )
    ids["flaky"] = queue.submit(f"{TASKS}:fail", "upstream returned 503", name="flaky")
    ids["primes"] = queue.submit(f"{TASKS}:count_primes", 30_000, name="primes", priority=5)
    return ids


def stop_report(jobs: list[JobRecord], cancelled_at: dict[int, float]) -> list[str]:
    """What the demo measured: for each job that was running when it was cancelled, the
    time from the committed cancel to its stored outcome; for a timeout, from its
    deadline to its outcome. Both clocks are this machine's ``time.time()``."""
    lines: list[str] = []
    stops: list[str] = []
    for job in jobs:
        at = cancelled_at.get(job.id)
        ran = job.started_at is not None and at is not None and job.started_at <= at
        if job.status is JobStatus.CANCELLED and ran and at is not None and job.ended_at:
            stops.append(f"{visible(job.name or str(job.id))} {_ms(job.ended_at - at)}")
        if (
            job.cancel_reason == "timeout"
            and job.timeout is not None
            and job.started_at is not None
            and job.ended_at is not None
        ):
            late = job.ended_at - job.started_at - job.timeout
            lines.append(
                f"timeout: {visible(job.name or str(job.id))} stopped {_ms(late)} after its "
                f"{job.timeout:g} s deadline"
            )
    if stops:
        lines.insert(0, "running jobs stopped, cancel to outcome stored: " + ", ".join(stops))
    else:
        lines.insert(0, "no job was running when it was cancelled")
    return lines


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class _Script:
    """The user's actions, each taken once the jobs it acts on show progress; each
    returns what to print."""

    def __init__(self, queue: Queue, ids: dict[str, int]) -> None:
        self.queue = queue
        self.ids = ids
        self.pattern_done = False
        self.parent_done = False
        #: job id -> when its cancel was committed (time.time(), as the server's clock)
        self.cancelled_at: dict[int, float] = {}

    def _done_steps(self, name: str) -> int:
        job = self.queue.get(self.ids[name])
        meta: Any = job.progress if job is not None else None
        return int(meta.get("done", 0)) if isinstance(meta, dict) else 0

    def tick(self) -> list[str]:
        said: list[str] = []
        if not self.pattern_done and self._done_steps("user_42_report_1") >= 10:
            self.pattern_done = True
            outcome = self.queue.cancel_jobs(
                name_pattern="user_42_*", message="user 42 closed the tab"
            )
            self._note(outcome.cancelled + outcome.requested)
            said.append(f"$ cancelpool cancel --pattern 'user_42_*'   -> {outcome.count} jobs")
        if not self.parent_done and self._done_steps("pipeline") >= 20:
            self.parent_done = True
            outcome = self.queue.cancel_jobs([self.ids["pipeline"]])
            self._note(outcome.cancelled + outcome.requested)
            said.append(
                f"$ cancelpool cancel {self.ids['pipeline']}   -> the pipeline and its "
                f"{outcome.count - 1} child jobs"
            )
        return said

    def _note(self, ids: tuple[int, ...]) -> None:
        now = time.time()
        for job_id in ids:
            self.cancelled_at.setdefault(job_id, now)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

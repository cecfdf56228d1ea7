"""Helpers of the queue tests: real servers and CLI processes on a db in tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from cancelpool.queue import JobRecord, Queue

HERE = Path(__file__).parent
TASKS = "qtasks"
DEMO = "cancelpool.demo_tasks"
#: Backstops against a hang, not expectations: a server starts in well under a second
#: and jobs finish in milliseconds; a loaded CI machine can be far slower.
BACKSTOP = 60.0


def env() -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [environ.get("PYTHONPATH")])])
    environ["NO_COLOR"] = "1"
    # pytest-xdist exports COLUMNS=80 to its workers; rich honours it even on a pipe
    # (as documented), so tests that read whole cells say the width: none, uncut.
    environ.pop("COLUMNS", None)
    environ.pop("LINES", None)
    environ.pop("CANCELPOOL_DB", None)
    return environ


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = BACKSTOP) -> Any:
    """Poll ``predicate`` until it returns something truthy (the handshake)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Runner:
    """Runs ``python -m cancelpool.cli VERB ... --db DB`` as a real subprocess."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def __call__(
        self, verb: str, *args: str, input: str | None = None, timeout: float = BACKSTOP
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cancelpool.cli", verb, "--db", str(self.db), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env(),
            timeout=timeout,
        )


class ServerProc:
    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.family: list[psutil.Process] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def remember_children(self) -> None:
        try:
            self.family = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass

    def stop(self, sig: int = signal.SIGTERM, timeout: float = BACKSTOP) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def assert_family_gone(self) -> None:
        _, alive = psutil.wait_procs(self.family, timeout=BACKSTOP)
        assert not alive, f"processes left behind: {alive}"


def wait_status(queue: Queue, job_id: int, *statuses: str) -> JobRecord:
    def check() -> JobRecord | None:
        job = queue.get(job_id)
        assert job is not None
        return job if job.status.value in statuses else None

    result: JobRecord = wait_for(check, f"job {job_id} to be {' or '.join(statuses)}")
    return result


def wait_progress(queue: Queue, job_id: int) -> JobRecord:
    def check() -> JobRecord | None:
        job = queue.get(job_id)
        assert job is not None
        return job if job.progress is not None else None

    result: JobRecord = wait_for(check, f"job {job_id} to report progress")
    return result

"""``cancelpool serve --metrics HOST:PORT``: a real server's ``/metrics``, scraped over
HTTP while it runs jobs from a real queue."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from _handshake import BACKSTOP
from _leaks import assert_no_new_shm, dev_shm

pytest.importorskip("prometheus_client")

from cancelpool.queue import Queue

ALLOW = "cancelpool.demo_tasks:*"


def env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CANCELPOOL_")}
    environ["NO_COLOR"] = "1"
    return {**environ, **extra}


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy (a scrape has no event)."""
    deadline = time.monotonic() + BACKSTOP
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within the {BACKSTOP}s backstop")
        time.sleep(0.05)  # a poll interval, not a synchronization


class Serve:
    """``cancelpool serve`` in a subprocess; its whole family is gone after stop()."""

    def __init__(self, db: Path, log: Path, *args: str, **environ: str) -> None:
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
                    "--workers",
                    "1",
                    "--quiet",
                    "--allow",
                    ALLOW,
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env(**environ),
            )
        self.family: list[psutil.Process] = []

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics_url(self) -> str:
        found = wait_for(
            lambda: (
                re.search(r"metrics (http://127\.0\.0\.1:\d+/metrics)", self.output())
                or self.proc.poll() is not None
            ),
            "the metrics address in serve's log",
        )
        assert found is not True, f"serve exited {self.proc.returncode}:\n{self.output()}"
        self.family = psutil.Process(self.proc.pid).children(recursive=True)
        return str(found.group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(BACKSTOP)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(BACKSTOP)
        _, alive = psutil.wait_procs(self.family, timeout=BACKSTOP)
        assert not alive, f"processes left behind: {alive}"
        return code


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=BACKSTOP) as response:
        assert response.status == 200
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "queue.db"


@pytest.fixture
def queue(db: Path) -> Iterator[Queue]:
    q = Queue(db)
    yield q
    q.close()


def test_serve_metrics_are_scraped_over_http(db: Path, tmp_path: Path, queue: Queue) -> None:
    shm_before = dev_shm()
    server = Serve(db, tmp_path / "serve.log", "--concurrency", "1", "--metrics", "127.0.0.1:0")
    try:
        url = server.metrics_url()
        wait_for(lambda: scrape(url)["cancelpool_workers"] == 1, "the worker started")
        added = queue.submit("cancelpool.demo_tasks:add", 2, 3)
        assert queue.wait(added, BACKSTOP).status == "completed"
        failed = queue.submit("cancelpool.demo_tasks:fail")
        assert queue.wait(failed, BACKSTOP).status == "failed"
        waiting = queue.submit("cancelpool.demo_tasks:wait_for_cancel")
        wait_for(lambda: scrape(url)["cancelpool_jobs_running"] == 1, "the job running")
        # concurrency 1: these stay queued in the database while it runs.
        queue.submit("cancelpool.demo_tasks:add", 1, 1)
        queue.submit("cancelpool.demo_tasks:add", 1, 2)
        wait_for(lambda: scrape(url)["cancelpool_jobs_queued"] == 2, "two jobs queued")
        queue.cancel(waiting, message="enough")
        assert queue.wait(waiting, BACKSTOP).status == "cancelled"

        def settled() -> dict[str, float] | None:
            values = scrape(url)
            done = values['cancelpool_jobs_finished_total{outcome="succeeded"}'] == 3
            return values if done and values["cancelpool_jobs_queued"] == 0 else None

        values = wait_for(settled, "every job finished and counted")
        assert values['cancelpool_jobs_finished_total{outcome="failed"}'] == 1
        assert values['cancelpool_jobs_finished_total{outcome="cancelled"}'] == 1
        assert values['cancelpool_jobs_finished_total{outcome="forced"}'] == 0
        assert values["cancelpool_jobs_running"] == 0
        assert values["cancelpool_job_duration_seconds_count"] == 5
        assert values["cancelpool_cancel_latency_seconds_count"] == 1
        assert values["cancelpool_workers"] == 1
        assert values['cancelpool_worker_deaths_total{expected="false"}'] == 0
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert "Traceback" not in server.output()
    assert_no_new_shm(shm_before)


def test_serve_metrics_comes_from_the_environment_too(
    db: Path, tmp_path: Path, queue: Queue
) -> None:
    server = Serve(db, tmp_path / "serve.log", CANCELPOOL_METRICS="127.0.0.1:0")
    try:
        url = server.metrics_url()
        # /metrics answers before the server takes its signals: the worker it starts
        # after that says it is ready for SIGTERM.
        wait_for(lambda: scrape(url).get("cancelpool_workers") == 1, "the pool's worker")
    finally:
        assert server.stop() == 0, server.output()


@pytest.mark.parametrize("bind", ["127.0.0.1:99999", "no-port", "256.1.1.1:80"])
def test_serve_metrics_refuses_a_bad_address_and_creates_nothing(
    db: Path, tmp_path: Path, bind: str
) -> None:
    server = Serve(db, tmp_path / "serve.log", "--metrics", bind)
    code = server.proc.wait(BACKSTOP)  # it exits on its own
    server.stop()
    assert code == 2, server.output()
    assert "--metrics" in server.output()
    assert "Traceback" not in server.output()
    assert not db.exists()  # refused before the server created anything


def test_serve_metrics_refuses_an_address_in_use(db: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Serve(db, tmp_path / "serve.log", "--metrics", f"127.0.0.1:{port}")
        code = server.proc.wait(BACKSTOP)
        server.stop()
    assert code == 2, server.output()
    assert f"--metrics: cannot listen on 127.0.0.1:{port}" in server.output()
    assert "Traceback" not in server.output()
    assert not db.exists()

"""The queue's path: ``Queue.submit`` under a span stores the submitter's context in
the job's row, a real ``cancelpool serve`` passes it to its pool, and the job's span
(written by serve's worker, configured with ``--worker-init``) continues that trace. A
row whose context is malformed runs untraced, without a word in the server's log."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from opentelemetry import trace

from _handshake import BACKSTOP
from cancelpool import AsyncQueue
from cancelpool import _tracing as tracing
from cancelpool.queue import JobStatus, Queue
from otel import _spans

TESTS = Path(__file__).resolve().parent.parent
tracer = trace.get_tracer("tests.otel")


def environment(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CANCELPOOL_")}
    return {**environ, "NO_COLOR": "1", **extra}


class Serve:
    """``cancelpool serve`` in a subprocess whose workers export to ``spans``."""

    def __init__(self, db: Path, log: Path, spans: Path) -> None:
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
                    "--allow",
                    "cancelpool.demo_tasks:*",
                    "--path",
                    str(TESTS),
                    "--worker-init",
                    "otel._spans:install_from_env",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment(**{_spans.SPANS_VARIABLE: str(spans)}),
            )
        self.family: list[psutil.Process] = []

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        try:
            self.family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
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


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "queue.db"


@pytest.fixture
def queue(db: Path) -> Iterator[Queue]:
    q = Queue(db)
    yield q
    q.close()


def test_the_trace_goes_from_the_submitter_through_serve_to_the_worker(
    db: Path, queue: Queue, tmp_path: Path, span_file: Path
) -> None:
    with tracer.start_as_current_span("submitter") as submitter:
        traced = queue.submit("cancelpool.demo_tasks:add", 1, 2, name="traced-add")
    untraced = queue.submit("cancelpool.demo_tasks:add", 3, 4, name="untraced")
    # Rows another program wrote: whatever is in trace_context is only a hint.
    bad = {
        "garbage": "not a traceparent",
        "long": "00-" + "a" * 32 + "-" + "b" * 16 + "-01\n" + "k=v," * 2000,
        "zeros": "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "binary": "00-\x00\x01-\udcff",
    }
    ids = {name: queue.submit("cancelpool.demo_tasks:add", 5, 6, name=name) for name in bad}
    with sqlite3.connect(db) as conn:
        for name, text in bad.items():
            conn.execute(
                "UPDATE jobs SET trace_context = ? WHERE id = ?",
                (text.encode("utf-8", "surrogatepass"), ids[name]),
            )
    server = Serve(db, tmp_path / "serve.log", span_file)
    try:
        for job_id in (traced, untraced, *ids.values()):
            record = queue.wait(job_id, BACKSTOP)
            assert record.status is JobStatus.COMPLETED, (record, server.output())
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert "Traceback" not in server.output()
    [span] = _spans.read(span_file)  # the other jobs ran untraced
    context = submitter.get_span_context()
    assert span["name"] == "cancelpool.job traced-add"
    assert span["trace_id"] == format(context.trace_id, "032x")
    assert span["parent_id"] == format(context.span_id, "016x")
    assert span["status"] == "OK"
    assert span["pid"] != server.proc.pid  # a worker of the node, not the node


def test_the_row_keeps_the_submitters_context_and_async_queue_too(db: Path, queue: Queue) -> None:
    import anyio

    async def submit_async() -> tuple[int, str | None]:
        async with AsyncQueue(db) as aq:
            with tracer.start_as_current_span("async submitter"):
                expected = tracing.capture()
                return await aq.submit("cancelpool.demo_tasks:add", 1, 2), expected

    with tracer.start_as_current_span("submitter"):
        expected = tracing.capture()
        sync_id = queue.submit("cancelpool.demo_tasks:add", 1, 2)
    async_id, async_expected = anyio.run(submit_async)
    plain_id = queue.submit("cancelpool.demo_tasks:add", 1, 2)
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT id, trace_context FROM jobs").fetchall())
    assert expected is not None
    assert async_expected is not None
    assert rows == {sync_id: expected, async_id: async_expected, plain_id: None}


def test_db_upgrade_brings_a_version_1_queue_to_version_2(db: Path, queue: Queue) -> None:
    job = queue.submit("cancelpool.demo_tasks:add", 1, 2, name="old")
    queue.close()
    with sqlite3.connect(db) as conn:  # the queue as cancelpool's schema 1 left it
        conn.execute("ALTER TABLE jobs DROP COLUMN trace_context")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    done = subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", "db", "upgrade", "--db", str(db)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=BACKSTOP,
    )
    assert done.returncode == 0, done.stderr
    assert "upgraded from version 1 to 2" in done.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    assert "trace_context" in columns
    with Queue(db) as again:
        record = again.get(job)
        assert record is not None
        assert record.name == "old"  # the job survived the upgrade
    again2 = subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", "db", "upgrade", "--db", str(db)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=BACKSTOP,
    )
    assert "already at version 2" in again2.stdout, again2


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("not a reference", "is not an import path"),
        ("os:path", "is not callable as a task"),
        ("no_such_module_here:setup", "cannot import module"),
    ],
)
def test_a_bad_worker_init_is_a_usage_error_and_creates_nothing(
    db: Path, value: str, said: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cancelpool.cli",
            "serve",
            "--db",
            str(db),
            "--allow",
            "cancelpool.demo_tasks:*",
            "--worker-init",
            value,
        ],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=BACKSTOP,
    )
    assert done.returncode == 2, done
    assert "--worker-init" in done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert not db.parent.exists()

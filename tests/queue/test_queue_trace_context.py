"""The jobs' ``trace_context`` column on both stores: what ``Queue.submit`` writes under
a span, what a claim hands the node, and schema version 1 queues upgraded to 2 (when
opened, and by ``cancelpool db upgrade``)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from typing import Any

import pytest
from qhelpers import BACKSTOP, env

from cancelpool.queue import Queue

trace = pytest.importorskip("opentelemetry.trace")

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
ALLOW = ("cancelpool.demo_tasks:*",)


def a_span() -> Any:
    """A valid span context made current without any provider (no SDK needed)."""
    context = trace.SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=trace.TraceFlags(1))
    return trace.use_span(trace.NonRecordingSpan(context))


def make_version_1(db: Any, store_kind: str) -> None:
    """Turn the queue back into what cancelpool's schema 1 left."""
    statements = ["ALTER TABLE jobs DROP COLUMN trace_context", "UPDATE meta SET value = '1'"]
    if store_kind == "sqlite":
        with sqlite3.connect(db) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET search_path TO cancelpool")
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def fresh(db: Any) -> Any:
    Queue(db).close()  # the SQLite queue exists too, as the PostgreSQL one does
    return db


def test_submit_under_a_span_stores_its_context_and_a_claim_returns_it(fresh: Any) -> None:
    with Queue(fresh) as queue:
        with a_span():
            traced = queue.submit("cancelpool.demo_tasks:add", 1, 2)
        plain = queue.submit("cancelpool.demo_tasks:add", 3, 4)
        claimed, refused = queue.store.claim("a-node", 10, ALLOW)
    assert refused == 0
    contexts = {job.id: job.trace_context for job in claimed}
    assert contexts == {traced: TRACEPARENT, plain: None}


def db_upgrade(db: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cancelpool.cli", "db", "upgrade", "--db", str(db)],
        capture_output=True,
        text=True,
        env=env(),
        timeout=BACKSTOP,
    )


def test_a_version_1_queue_is_upgraded_by_db_upgrade(fresh: Any, store_kind: str) -> None:
    with Queue(fresh) as queue:
        old = queue.submit("cancelpool.demo_tasks:add", 1, 2, name="old")
    make_version_1(fresh, store_kind)
    done = db_upgrade(fresh)
    assert done.returncode == 0, done
    assert "upgraded from version 1 to 2" in done.stdout
    with Queue(fresh) as queue:
        record = queue.get(old)
        assert record is not None
        assert record.name == "old"
        with a_span():
            new = queue.submit("cancelpool.demo_tasks:add", 1, 2)
        claimed, _ = queue.store.claim("a-node", 10, ALLOW)
    assert {job.id: job.trace_context for job in claimed} == {old: None, new: TRACEPARENT}
    again = db_upgrade(fresh)
    assert again.returncode == 0, again
    assert "already at version 2" in again.stdout


def test_a_version_1_queue_is_upgraded_when_opened(fresh: Any, store_kind: str) -> None:
    make_version_1(fresh, store_kind)
    with Queue(fresh) as queue:
        assert queue.store.found_version == 1
        with a_span():
            job = queue.submit("cancelpool.demo_tasks:add", 1, 2)
        [claimed], _ = queue.store.claim("a-node", 10, ALLOW)
    assert (claimed.id, claimed.trace_context) == (job, TRACEPARENT)
    with Queue(fresh) as again:
        assert again.store.found_version == 2


def test_a_queue_of_a_newer_version_is_refused(fresh: Any, store_kind: str) -> None:
    from cancelpool.queue import QueueFileError

    if store_kind == "sqlite":
        with sqlite3.connect(fresh) as conn:
            conn.execute("UPDATE meta SET value = '3'")
    else:
        import psycopg

        with psycopg.connect(fresh, autocommit=True) as conn:
            conn.execute("UPDATE cancelpool.meta SET value = '3'")
    with pytest.raises(QueueFileError, match="version 3"):
        Queue(fresh)

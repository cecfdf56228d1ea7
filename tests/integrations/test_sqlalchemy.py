"""cancelpool.integrations.sqlalchemy on a real SQLite file (aiosqlite) and a real
PostgreSQL server (psycopg's async driver): every test runs on both."""

# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("aiosqlite")

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cancelpool import Cancelable, ManualCancelation, TimeoutCancelation
from cancelpool.integrations.sqlalchemy import (
    CancelableAsyncSession,
    CancellableAsyncSession,
)

metadata = MetaData()
events = Table("events", metadata, Column("id", Integer, primary_key=True), Column("name", String))
FOREVER = 3600


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite runs its connection in a thread and talks to it with asyncio futures.
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a database of its own on the PostgreSQL
    server (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        return
    server = request.getfixturevalue("pg_server")
    url = server.new_db()
    try:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.drop_db(url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())


def checked_out(engine: AsyncEngine) -> int:
    return int(engine.pool.checkedout())  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_cancelled_session_rolls_back_and_returns_its_connection(
    engine: AsyncEngine,
) -> None:
    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0.05), CancelableAsyncSession(engine) as session:
            await session.execute(insert(events), [{"name": "half-written"}])
            assert checked_out(engine) == 1
            await anyio.sleep(FOREVER)
    assert checked_out(engine) == 0
    assert await count(engine) == 0


@pytest.mark.anyio
async def test_session_commits_normally(engine: AsyncEngine) -> None:
    async with Cancelable(), CancellableAsyncSession(engine) as session:
        await session.execute(insert(events), [{"name": "kept"}])
        await session.commit()
    assert await count(engine) == 1
    assert checked_out(engine) == 0


@pytest.mark.anyio
async def test_execute_chunked_checks_between_chunks(engine: AsyncEngine) -> None:
    produced: list[int] = []
    op = Cancelable()

    def rows() -> Iterator[dict[str, str]]:
        for i in range(100):
            if i == 30:  # while the fourth chunk is gathered: no await in between
                op.cancel_sync(message="enough")
            produced.append(i)
            yield {"name": f"row{i}"}

    with pytest.raises(ManualCancelation, match="enough"):
        async with op, CancelableAsyncSession(engine) as session:
            await session.execute_chunked(insert(events), rows(), chunk_size=10)
    assert len(produced) == 40  # stopped at the check before the fourth chunk
    assert await count(engine) == 0  # the three chunks sent were rolled back
    assert checked_out(engine) == 0


@pytest.mark.anyio
async def test_stream_chunks_stop_on_cancel(engine: AsyncEngine) -> None:
    async with CancelableAsyncSession(engine) as session:
        sent = await session.execute_chunked(
            insert(events), [{"name": f"r{i}"} for i in range(25)], chunk_size=10
        )
        await session.commit()
    assert sent == 25
    chunks: list[int] = []
    with pytest.raises(ManualCancelation):
        async with Cancelable() as op, CancelableAsyncSession(engine) as session:
            async for chunk in session.stream_chunks(select(events.c.id), chunk_size=10):
                chunks.append(len(chunk))
                op.cancel_sync()
    assert chunks == [10]
    assert checked_out(engine) == 0
    with pytest.raises(ValueError, match="chunk_size"):
        async with CancelableAsyncSession(engine) as session:
            await session.execute_chunked(insert(events), [], chunk_size=0)


@pytest.mark.anyio
async def test_a_cancel_during_a_chunk_leaves_the_database_writable(
    engine: AsyncEngine,
) -> None:
    # The cancel lands while the driver call for the second chunk is in flight (the
    # hook runs just before it): the chunk finishes, the next check stops the work,
    # and the rollback leaves no lock behind for the next writer.
    from sqlalchemy import event

    op = Cancelable()
    calls = 0

    def cancel_on_second_chunk(*_: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            op.cancel_sync(message="mid-chunk")

    event.listen(engine.sync_engine, "before_cursor_execute", cancel_on_second_chunk)
    try:
        with pytest.raises(ManualCancelation, match="mid-chunk"):
            async with op, CancelableAsyncSession(engine) as session:
                rows = ({"name": f"row{i}"} for i in range(100))
                await session.execute_chunked(insert(events), rows, chunk_size=10)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", cancel_on_second_chunk)
    assert calls == 2  # the second chunk was sent, no third
    assert checked_out(engine) == 0
    async with CancelableAsyncSession(engine) as session:
        await session.execute(insert(events), [{"name": "next writer"}])
        await session.commit()
    assert await count(engine) == 1

"""SQLAlchemy (async, SQLite via aiosqlite): a bulk insert that runs out of time is
rolled back, its connection back in the pool; a chunked read stops when asked.

Needs ``pip install cancelpool[sqlalchemy] aiosqlite``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from cancelpool import Cancelable, CancelationToken, ManualCancelation, TimeoutCancelation
from cancelpool.integrations.sqlalchemy import CancelableAsyncSession

metadata = MetaData()
readings = Table(
    "readings", metadata, Column("id", Integer, primary_key=True), Column("value", String)
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_async_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

        budget = Cancelable.with_timeout(0.2, name="import")

        def endless() -> Iterator[dict[str, str]]:
            i = 0
            while True:  # far more rows than the budget allows
                i += 1
                yield {"value": f"reading {i}"}

        try:
            async with budget, CancelableAsyncSession(engine) as session:
                await session.execute_chunked(insert(readings), endless(), chunk_size=500)
                await session.commit()
        except TimeoutCancelation as exc:
            print(f"import stopped: {exc.message}")
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(readings))).scalar_one()
        print(f"rows committed: {rows}; connections checked out: {engine.pool.checkedout()}")  # type: ignore[attr-defined]

        async with CancelableAsyncSession(engine) as session:
            await session.execute_chunked(
                insert(readings), ({"value": str(i)} for i in range(2500)), chunk_size=500
            )
            await session.commit()
        stop = CancelationToken()
        read = 0
        try:
            async with Cancelable.with_token(stop), CancelableAsyncSession(engine) as session:
                async for chunk in session.stream_chunks(select(readings), chunk_size=1000):
                    read += len(chunk)
                    if read >= 2000:
                        stop.cancel_sync("seen enough")
        except ManualCancelation as exc:
            print(f"read {read} rows, then: {exc.message}")
        await engine.dispose()


if __name__ == "__main__":
    anyio.run(main)

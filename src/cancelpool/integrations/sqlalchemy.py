"""SQLAlchemy (async): a session that rolls back and lets go of its connection when
its operation is cancelled, and chunked work that checks cancellation between chunks.

Example::

    engine = create_async_engine("sqlite+aiosqlite:///app.db")
    async with Cancelable.with_timeout(10), CancelableAsyncSession(engine) as session:
        await session.execute_chunked(insert(Event), rows, chunk_size=500)
        await session.commit()

A cancellation (the operation's own error or the backend's cancelled exception)
leaving the session's ``async with`` rolls the transaction back and closes the
session in a shielded scope, so the connection is back in the pool before the
cancellation goes on; nothing half-written is committed. The chunked methods never
let a cancellation interrupt a driver call (each chunk is bounded work): a call cut
off half way keeps running in the driver, and SQLAlchemy discards that connection
with its transaction, and its locks, possibly still open. A plain ``execute()`` of
your own can be cut off by a deadline like any await; keep long writes chunked.

Requires ``pip install cancelpool[sqlalchemy]`` and an async driver (aiosqlite,
asyncpg, psycopg).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
from sqlalchemy import Executable, Row
from sqlalchemy.ext.asyncio import AsyncSession

from .._core._cancelable import Cancelable, current_operation
from .._core._exceptions import CancelationError

__all__ = ("CancelableAsyncSession", "CancellableAsyncSession")

logger = logging.getLogger("cancelpool")

#: Rows per chunk by default: bigger means fewer round trips and checks, smaller
#: stops sooner after a cancellation.
DEFAULT_CHUNK_SIZE = 1000


def _is_cancellation(exc: BaseException | None) -> bool:
    return isinstance(exc, (CancelationError, anyio.get_cancelled_exc_class()))


def _chunk_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"chunk_size must be a positive int, not {value!r}")
    return value


class CancelableAsyncSession(AsyncSession):
    """An ``AsyncSession`` that cleans up after a cancellation.

    Args:
        bind: the engine (or connection), as for ``AsyncSession``.
        cancelable: the operation whose cancellation the chunked methods check; by
            default the one running (:func:`current_operation`) at each call.
        **kwargs: passed to ``AsyncSession``.
    """

    def __init__(self, bind: Any = None, *, cancelable: Cancelable | None = None, **kwargs: Any):
        if cancelable is not None and not isinstance(cancelable, Cancelable):
            raise TypeError(f"cancelable must be a Cancelable, not {type(cancelable).__name__}")
        super().__init__(bind, **kwargs)
        self._cancelable = cancelable

    async def _check(self) -> None:
        op = self._cancelable if self._cancelable is not None else current_operation()
        if op is not None:
            await op.check_cancelation()

    async def _send(self, statement: Executable, chunk: list[Mapping[str, Any]]) -> None:
        # Shielded: a cancellation that lands while the driver runs a chunk waits
        # for the chunk (bounded work) and is raised at the next check. Interrupting
        # the await would not stop the driver's thread; SQLAlchemy would discard a
        # connection still holding its transaction's locks, and the next writer
        # would find the database locked.
        with anyio.CancelScope(shield=True):
            await self.execute(statement, chunk)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not _is_cancellation(exc):
            await super().__aexit__(exc_type, exc, tb)
            return
        # Shielded: the cancellation that ends the block must not interrupt the
        # clean-up, or the transaction and its connection would be left open.
        with anyio.CancelScope(shield=True):
            try:
                await self.rollback()
            finally:
                await self.close()
        logger.info("cancelpool: session rolled back and closed after a cancellation")

    async def execute_chunked(
        self,
        statement: Executable,
        rows: Iterable[Mapping[str, Any]],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> int:
        """Execute ``statement`` for ``rows`` (executemany), ``chunk_size`` at a time.

        Cancellation is checked before each chunk and after the last (a
        checkpoint); a cancellation that arrives while a chunk is being executed
        lets that chunk finish and stops at the next check. Leaving the session's
        block then rolls every chunk sent back. Does not commit. Returns the
        number of rows sent.
        """
        size = _chunk_size(chunk_size)
        sent = 0
        chunk: list[Mapping[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == size:
                await self._check()
                await self._send(statement, chunk)
                sent += len(chunk)
                chunk = []
        if chunk:
            await self._check()
            await self._send(statement, chunk)
            sent += len(chunk)
        await self._check()
        return sent

    async def stream_chunks(
        self,
        statement: Executable,
        params: Mapping[str, Any] | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[Sequence[Row[Any]]]:
        """The rows of ``statement`` in lists of up to ``chunk_size``, fetched as
        they are read (a server-side cursor where the driver has one).

        Cancellation is checked before each chunk is fetched; a cancellation that
        arrives during a fetch lets that fetch finish (bounded work) and stops at
        the next check. The cursor is closed when the iteration ends, early or not.
        """
        size = _chunk_size(chunk_size)
        result = await self.stream(statement, params)
        try:
            while True:
                # Checked before each fetch, and the fetch itself shielded: a
                # cancellation never interrupts a driver call half way.
                await self._check()
                with anyio.CancelScope(shield=True):  # as in _send
                    partition = await result.fetchmany(size)
                if not partition:
                    return
                yield partition
        finally:
            with anyio.CancelScope(shield=True):
                await result.close()


# The double-l spelling of the seed documents.
CancellableAsyncSession = CancelableAsyncSession

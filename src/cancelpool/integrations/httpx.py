"""httpx: a client whose requests and streamed chunks are cancellation checkpoints.

:class:`CancelableClient` is an ``httpx.AsyncClient`` that, inside an operation
(``current_operation()`` or the ``cancelable=`` it was given), checks cancellation
before each request and on each streamed chunk, and can download to a file with
progress reports, resuming a partial file with an HTTP ``Range`` request.

Let the operation own the deadline (``Cancelable.with_timeout``) and pass
``timeout=None`` to the client, so that two timeouts do not race (the seed
documents' advice).

Requires ``pip install cancelpool[httpx]``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from .._core._cancelable import Cancelable, current_operation

__all__ = ("CancelableClient", "CancellableClient", "DownloadResult")

#: Bytes read per chunk of a download: bigger means fewer checkpoints and progress
#: reports, smaller reacts to a cancellation sooner on a slow link.
DEFAULT_CHUNK_SIZE = 64 * 1024


class DownloadResult:
    """What :meth:`CancelableClient.download` did.

    Attributes:
        path: the file written.
        size: its size in bytes now.
        resumed_from: bytes that were already there and kept (0 if none).
        status_code: the HTTP status of the response (200, or 206 when resumed).
    """

    __slots__ = ("path", "resumed_from", "size", "status_code")

    def __init__(self, path: str, size: int, resumed_from: int, status_code: int) -> None:
        self.path = path
        self.size = size
        self.resumed_from = resumed_from
        self.status_code = status_code

    def __repr__(self) -> str:
        return (
            f"<DownloadResult {self.path!r} {self.size} bytes, resumed from "
            f"{self.resumed_from}, HTTP {self.status_code}>"
        )


class CancelableClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that stops at cancellation checkpoints.

    Args:
        cancelable: the operation to check; by default the one running
            (:func:`current_operation`) at each call.
        **kwargs: passed to ``httpx.AsyncClient``.

    A cancellation during a request (a deadline passing, a token) interrupts it at
    once as any anyio cancellation does; the checks before a request and between
    chunks make sure nothing new starts once the operation is cancelled, even where
    no await would have noticed.
    """

    def __init__(self, *, cancelable: Cancelable | None = None, **kwargs: Any) -> None:
        if cancelable is not None and not isinstance(cancelable, Cancelable):
            raise TypeError(f"cancelable must be a Cancelable, not {type(cancelable).__name__}")
        super().__init__(**kwargs)
        self._cancelable = cancelable

    def _operation(self) -> Cancelable | None:
        return self._cancelable if self._cancelable is not None else current_operation()

    async def _check(self) -> None:
        op = self._operation()
        if op is not None:
            await op.check_cancelation()

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Check cancellation, then send (every verb goes through here)."""
        await self._check()
        return await super().send(request, **kwargs)

    async def iter_bytes(
        self, response: httpx.Response, chunk_size: int | None = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """The body of a streamed ``response``, checking cancellation per chunk."""
        async for chunk in response.aiter_bytes(chunk_size):
            await self._check()
            yield chunk

    async def download(
        self,
        url: str | httpx.URL,
        path: str | os.PathLike[str],
        *,
        resume: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **kwargs: Any,
    ) -> DownloadResult:
        """Download ``url`` to ``path``, reporting progress, resuming a partial file.

        With ``resume`` and a partial file at ``path``, asks for the rest with
        ``Range: bytes=<size>-``; a server that answers 206 gets the bytes appended,
        one that answers 200 (no range support) gets the file rewritten. Progress is
        reported to the operation ("downloaded N bytes", metadata ``downloaded``,
        ``total`` (None if unknown)) after each chunk.

        On cancellation the bytes written so far stay in the file (flushed), so a
        later call resumes there; the cancellation then propagates as usual.

        Raises:
            httpx.HTTPStatusError: the server answered with an error status
                (416 for a range past the end means the file is already complete and
                is not an error).
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, not {chunk_size!r}")
        target = os.fspath(path)
        have = 0
        if resume:
            file_path = anyio.Path(target)
            if await file_path.exists():
                have = (await file_path.stat()).st_size
        headers = dict(kwargs.pop("headers", None) or {})
        if have:
            headers["Range"] = f"bytes={have}-"
        op = self._operation()
        async with self.stream("GET", url, headers=headers, **kwargs) as response:
            if have and response.status_code == 416:
                return DownloadResult(target, have, have, 416)
            response.raise_for_status()
            if response.status_code != 206:
                have = 0  # the server sent the whole file
            length = response.headers.get("content-length")
            total = have + int(length) if length is not None and length.isdigit() else None
            downloaded = have
            file = await anyio.open_file(target, "ab" if have else "wb")
            try:
                async for chunk in self.iter_bytes(response, chunk_size):
                    await file.write(chunk)
                    downloaded += len(chunk)
                    if op is not None:
                        await op.report_progress(
                            f"downloaded {downloaded} bytes",
                            {"downloaded": downloaded, "total": total},
                        )
            finally:
                with anyio.CancelScope(shield=True):  # keep what arrived, even if cancelled
                    await file.aclose()
            return DownloadResult(target, downloaded, have, response.status_code)


# The double-l spelling of the seed documents.
CancellableClient = CancelableClient

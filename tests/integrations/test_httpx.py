"""cancelpool.integrations.httpx against a real local server (uvicorn)."""

# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from _handshake import BACKSTOP
from cancelpool import Cancelable, ManualCancelation
from cancelpool.integrations.httpx import CancelableClient, CancellableClient
from integrations._server import serve

DATA = bytes(range(256)) * 1024  # 256 KiB
CHUNK = 16 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_app(hits: list[str]) -> Starlette:
    async def count(request: Request) -> Response:
        hits.append("count")
        return PlainTextResponse("ok")

    async def file(request: Request) -> Response:
        ranged = request.headers.get("range")
        hits.append(f"file {ranged}")
        start = 0
        if ranged is not None and ranged.startswith("bytes=") and ranged.endswith("-"):
            start = int(ranged[len("bytes=") : -1])
            if start >= len(DATA):
                return Response(status_code=416)
        body = DATA[start:]

        async def chunks() -> Any:
            for i in range(0, len(body), CHUNK):
                yield body[i : i + CHUNK]

        headers = {"content-length": str(len(body))}
        status = 206 if ranged is not None else 200
        return StreamingResponse(chunks(), status_code=status, headers=headers)

    return Starlette(routes=[Route("/count", count), Route("/file", file)])


@pytest.mark.anyio
async def test_no_request_once_the_operation_is_cancelled() -> None:
    hits: list[str] = []
    async with serve(make_app(hits)) as port, CancelableClient(timeout=None) as client:
        base = f"http://127.0.0.1:{port}"
        async with Cancelable() as op:
            assert (await client.get(f"{base}/count")).text == "ok"
        with pytest.raises(ManualCancelation):
            async with Cancelable() as op:
                op.cancel_sync()  # no await since: only the client's check sees it
                await client.get(f"{base}/count")
    assert hits == ["count"]
    assert CancellableClient is CancelableClient


@pytest.mark.anyio
async def test_download_reports_progress_and_resumes_with_range(tmp_path: Path) -> None:
    hits: list[str] = []
    target = tmp_path / "data.bin"
    reports: list[dict[str, Any]] = []
    async with serve(make_app(hits)) as port, CancelableClient(timeout=None) as client:
        url = f"http://127.0.0.1:{port}/file"

        # Stopped on a chunk: what arrived stays in the file.
        def stop_after_two(op_id: str, message: str, meta: dict[str, Any]) -> None:
            reports.append(meta)
            if len(reports) == 2:
                op.cancel_sync(message="pause")

        with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="pause"):
            async with Cancelable().on_progress(stop_after_two) as op:
                await client.download(url, target, chunk_size=CHUNK)
        kept = target.stat().st_size
        assert 0 < kept < len(DATA)
        assert DATA.startswith(target.read_bytes())
        assert reports[0] == {"downloaded": CHUNK, "total": len(DATA)}

        # Resumed with a Range request: the rest is appended.
        with anyio.fail_after(BACKSTOP):
            async with Cancelable(), CancelableClient(timeout=None) as again:
                result = await again.download(url, target, chunk_size=CHUNK)
        assert result.resumed_from == kept
        assert result.status_code == 206
        assert target.read_bytes() == DATA

        # Already complete: the server says 416, nothing changes.
        done = await client.download(url, target)
        assert done.status_code == 416
        assert target.read_bytes() == DATA
    assert hits == ["file None", f"file bytes={kept}-", f"file bytes={len(DATA)}-"]


@pytest.mark.anyio
async def test_bad_arguments_fail_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Cancelable"):
        CancelableClient(cancelable="nope")  # type: ignore[arg-type]
    async with CancelableClient() as client:
        with pytest.raises(ValueError, match="chunk_size"):
            await client.download("http://127.0.0.1:1/", tmp_path / "x", chunk_size=0)

"""httpx: a download stopped half way by the user, then resumed with HTTP Range.

Serves a file from a local uvicorn server. Needs ``pip install cancelpool[httpx]
uvicorn``.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cancelpool import Cancelable, CancelationToken, ManualCancelation
from cancelpool.integrations.httpx import CancelableClient

DATA = b"0123456789abcdef" * 64 * 1024  # 1 MiB


async def file(request: Request) -> Response:
    ranged = request.headers.get("range")
    start = int(ranged.removeprefix("bytes=").rstrip("-")) if ranged else 0
    body = DATA[start:]

    async def chunks() -> Any:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    return StreamingResponse(
        chunks(), status_code=206 if ranged else 200, headers={"content-length": str(len(body))}
    )


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/file"
    app = Starlette(routes=[Route("/file", file)])
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="critical"))
    stop = CancelationToken()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "data.bin"
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            while not server.started:
                await anyio.sleep(0.01)

            def progress(op_id: str, message: str, meta: dict[str, Any]) -> None:
                if meta["downloaded"] >= len(DATA) // 2:
                    stop.cancel_sync("user pressed pause")

            async with CancelableClient(timeout=None) as client:
                try:
                    async with Cancelable.with_token(stop, name="download").on_progress(progress):
                        await client.download(url, target)
                except ManualCancelation as exc:
                    print(f"paused: {exc.message}; kept {target.stat().st_size} bytes")
                async with Cancelable.with_timeout(30, name="resume"):
                    result = await client.download(url, target)
                print(f"resumed from {result.resumed_from} (HTTP {result.status_code})")
                print(f"complete and intact: {target.read_bytes() == DATA}")
            server.should_exit = True
    sock.close()


if __name__ == "__main__":
    anyio.run(main)

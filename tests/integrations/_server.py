"""A real uvicorn server on a free local port, for the integration tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from _handshake import BACKSTOP

# Seconds between looks at "has the server started?": a poll with a deadline.
POLL = 0.005


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[int]:
    """Run ``app`` under uvicorn on 127.0.0.1; yields the port; stops it after."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(BACKSTOP):
                while not server.started:
                    await anyio.sleep(POLL)
            try:
                yield port
            finally:
                server.should_exit = True
    finally:
        sock.close()


async def send_request(port: int, path: str) -> anyio.abc.SocketStream:
    """Open a raw connection and send a GET (a client we can hang up at will)."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    await stream.send(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    return stream


async def read_response(stream: anyio.abc.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    with anyio.fail_after(BACKSTOP):
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    return data

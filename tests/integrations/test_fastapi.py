"""cancelpool.integrations.fastapi with a real uvicorn server and real clients.

uvicorn runs on asyncio only, so these tests do too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi import Depends, FastAPI, Request, WebSocket

import _leaks
from _handshake import BACKSTOP, Gate
from cancelpool import (
    Cancelable,
    CancelationReason,
    CancelPool,
    JobCancelled,
    ManualCancelation,
    OperationStatus,
    SignalCancelation,
    current_operation,
)
from cancelpool.integrations.fastapi import (
    CancelableWebSocket,
    RequestCancelationMiddleware,
    cancelable_dependency,
    cancelable_streaming_response,
    cancellable_dependency,
    get_request_token,
    with_cancelation,
)
from integrations._server import read_response, send_request, serve
from pool._jobs import hold

FOREVER = 3600


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    before = _leaks.dev_shm()
    yield
    _leaks.assert_no_leftovers(before)


@pytest.mark.anyio
async def test_disconnect_cancels_the_request_operation() -> None:
    app = FastAPI()
    app.add_middleware(RequestCancelationMiddleware)
    started, ended = anyio.Event(), anyio.Event()
    seen: dict[str, Any] = {}

    @app.get("/slow")
    async def slow(cancel: Annotated[Cancelable, Depends(cancelable_dependency)]) -> str:
        try:
            async with cancel:
                started.set()
                await anyio.sleep(FOREVER)
        except SignalCancelation as exc:
            seen["error"] = exc
            raise
        finally:
            seen["op"] = cancel
            ended.set()
        return "never"

    async with serve(app) as port:
        client = await send_request(port, "/slow")
        with anyio.fail_after(BACKSTOP):
            await started.wait()
            await client.aclose()  # the client goes away
            await ended.wait()
    op = seen["op"]
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.SIGNAL
    assert op.context.cancel_message == "Client disconnected"
    assert isinstance(seen["error"], SignalCancelation)


@pytest.mark.anyio
async def test_get_request_token_is_the_token_the_disconnect_cancels() -> None:
    app = FastAPI()
    app.add_middleware(RequestCancelationMiddleware)
    started, ended = anyio.Event(), anyio.Event()
    seen: dict[str, Any] = {}

    @app.get("/wait")
    async def wait(request: Request) -> str:
        token = get_request_token(request)
        seen["same"] = get_request_token(request) is token
        seen["token"] = token
        started.set()
        try:
            await token.wait_for_cancel()
        finally:
            ended.set()
        return "cancelled"

    async with serve(app) as port:
        client = await send_request(port, "/wait")
        with anyio.fail_after(BACKSTOP):
            await started.wait()
            await client.aclose()
            await ended.wait()
    assert seen["same"]
    assert seen["token"].is_cancelled
    assert seen["token"].message == "Client disconnected"


@pytest.mark.anyio
async def test_disconnect_stops_the_pool_job_in_its_worker(no_leftovers: None) -> None:
    app = FastAPI()
    app.add_middleware(RequestCancelationMiddleware)
    ended = anyio.Event()
    seen: dict[str, Any] = {}
    with Gate() as gate, CancelPool(workers=1) as pool:

        @app.get("/report")
        async def report(cancel: Annotated[Cancelable, Depends(cancellable_dependency)]) -> str:
            try:
                async with cancel:
                    handle = seen["handle"] = pool.submit(hold, gate.path, "report")
                    return await handle
            finally:
                ended.set()

        async with serve(app) as port:
            client = await send_request(port, "/report")
            with anyio.fail_after(BACKSTOP):
                await gate.wait_async(1)  # the job runs in its worker, held at the gate
                await client.aclose()
                await ended.wait()
        handle = seen["handle"]
        exc = handle.exception(timeout=BACKSTOP)
        # Cancelled inside its worker (not killed): the job never got past the gate.
        assert isinstance(exc, JobCancelled)
        assert not exc.forced
        assert handle.status is OperationStatus.CANCELLED


@pytest.mark.anyio
async def test_with_cancelation_maps_timeout_to_504_and_others_to_503() -> None:
    app = FastAPI()
    app.add_middleware(RequestCancelationMiddleware)

    @app.get("/timeout")
    @with_cancelation(timeout=0.01)
    async def times_out(request: Request) -> str:
        assert current_operation() is not None
        await anyio.sleep(FOREVER)
        return "never"

    @app.get("/stopped")
    @with_cancelation()
    async def stopped(request: Request) -> str:
        op = current_operation()
        assert op is not None
        await op.cancel(message="maintenance")
        return "never"

    @app.get("/fine")
    @with_cancelation(timeout=BACKSTOP)
    async def fine(request: Request) -> str:
        return "ok"

    async with serve(app) as port:
        responses = {}
        for path in ("/timeout", "/stopped", "/fine"):
            client = await send_request(port, path + "?x=1")
            responses[path] = (await read_response(client)).decode()
            await client.aclose()
    assert responses["/timeout"].startswith("HTTP/1.1 504")
    assert responses["/stopped"].startswith("HTTP/1.1 503")
    assert "maintenance" in responses["/stopped"]
    assert responses["/fine"].startswith("HTTP/1.1 200")


@pytest.mark.anyio
async def test_streaming_response_stops_when_the_client_goes() -> None:
    app = FastAPI()
    app.add_middleware(RequestCancelationMiddleware)
    produced: list[int] = []
    first_sent, stopped = anyio.Event(), anyio.Event()

    @app.get("/events")
    async def events(cancel: Annotated[Cancelable, Depends(cancelable_dependency)]) -> Any:
        async def generate() -> AsyncIterator[str]:
            try:
                for i in range(1_000_000):
                    produced.append(i)
                    yield f"data: {i}\n\n"
                    first_sent.set()
                    await anyio.sleep(FOREVER if i else 0)
            finally:
                stopped.set()

        return await cancelable_streaming_response(generate(), cancel, "text/event-stream")

    async with serve(app) as port:
        client = await send_request(port, "/events")
        with anyio.fail_after(BACKSTOP):
            await first_sent.wait()
            await client.receive()
            await client.aclose()
            await stopped.wait()
    assert len(produced) <= 2


def test_bad_default_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="default_timeout"):
        RequestCancelationMiddleware(FastAPI(), default_timeout=-1)


@pytest.mark.anyio
async def test_websocket_calls_are_checkpoints_of_the_operation() -> None:
    websockets = pytest.importorskip("websockets")

    app = FastAPI()
    seen: dict[str, Any] = {}
    ended = anyio.Event()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        op = Cancelable(name="ws")
        reports: list[str] = []
        op.on_progress(lambda _id, message, _meta: reports.append(message))
        socket = CancelableWebSocket(websocket, op)
        try:
            async with op:
                await socket.accept()
                await socket.send_text(await socket.receive_text())  # an echo
                await socket.send_json({"n": 1})
                seen["json"] = await socket.receive_json()
                op.cancel_sync(message="server stops")
                await socket.send_text("never sent")
        except ManualCancelation as exc:
            seen["error"] = exc
            await socket.close()
        finally:
            seen["reports"] = reports
            ended.set()

    async with serve(app) as port:
        with anyio.fail_after(BACKSTOP):
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
                await client.send("hello")
                assert await client.recv() == "hello"
                assert await client.recv() == '{"n":1}'
                await client.send('{"back": 2}')
                await ended.wait()
    assert seen["json"] == {"back": 2}
    assert seen["error"].message == "server stops"
    assert seen["reports"] == ["WebSocket connected", "WebSocket closed"]

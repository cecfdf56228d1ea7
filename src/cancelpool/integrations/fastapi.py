"""FastAPI / Starlette: a request's operation is cancelled when its client goes away.

::

    client --TCP--> uvicorn --ASGI--> RequestCancelationMiddleware --> app
                                        | owns receive(): sees http.disconnect
                                        v
                              request token (cancelled: SIGNAL, "Client disconnected")
                                        v
            handler: async with cancel (Depends(cancelable_dependency)):
                         await pool.submit(job)  -> the job is cancelled in its worker

The middleware is the only reader of the ASGI ``receive`` channel: it hands every
message on to the app when the app asks for one, and keeps reading after the app has
read its body, so a disconnect is seen even while the handler is busy elsewhere.

Requires ``pip install cancelpool[fastapi]`` (Starlette is enough for everything but
:func:`with_cancelation`'s ``HTTPException``, which is Starlette's too).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._core._cancelable import Cancelable
from .._core._enums import CancelationReason
from .._core._exceptions import CancelationError
from .._core._helpers import cancelable_stream
from .._core._token import CancelationToken, LinkedCancelationToken

__all__ = (
    "CancelableWebSocket",
    "CancellableWebSocket",
    "RequestCancelationMiddleware",
    "RequestCancellationMiddleware",
    "cancelable_dependency",
    "cancelable_streaming_response",
    "cancellable_dependency",
    "cancellable_streaming_response",
    "get_request_token",
    "with_cancelation",
    "with_cancellation",
)

logger = logging.getLogger("cancelpool")

T = TypeVar("T")

#: Where the request's token and default timeout live in the ASGI scope.
TOKEN_KEY = "cancelation_token"
TIMEOUT_KEY = "cancelpool.default_timeout"
#: The token's reason and message when the client disconnects (as in the seed
#: library, which maps SIGNAL to HTTP 499).
DISCONNECT_REASON = CancelationReason.SIGNAL
DISCONNECT_MESSAGE = "Client disconnected"
#: ASGI messages the middleware may read ahead of the app. An app that never reads
#: its body (a GET) leaves its one ``http.request`` waiting here, and the disconnect
#: behind it is still seen; an upload larger than this many chunks that the app does
#: not read blocks the reading (and so the disconnect check) until the app reads.
#: More costs memory per request (a chunk is up to 64 KiB in uvicorn).
RECEIVE_AHEAD = 16


class RequestCancelationMiddleware:
    """ASGI middleware: a token per HTTP request, cancelled when the client goes away.

    Args:
        app: the ASGI application.
        default_timeout: seconds every request's :func:`cancelable_dependency`
            operation may take (None: no limit).
    """

    def __init__(self, app: ASGIApp, default_timeout: float | None = None) -> None:
        if default_timeout is not None and (
            isinstance(default_timeout, bool)
            or not isinstance(default_timeout, (int, float))
            or not default_timeout > 0
        ):
            raise ValueError(f"default_timeout must be seconds > 0, not {default_timeout!r}")
        self.app = app
        self.default_timeout = default_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = CancelationToken()
        scope[TOKEN_KEY] = token
        scope[TIMEOUT_KEY] = self.default_timeout
        forward, inbox = anyio.create_memory_object_stream[Message](RECEIVE_AHEAD)

        async def pump() -> None:
            async with forward:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        await token.cancel(DISCONNECT_REASON, DISCONNECT_MESSAGE)
                    try:
                        await forward.send(message)
                    except anyio.BrokenResourceError:  # the app has finished
                        return
                    if message["type"] == "http.disconnect":
                        return

        async def app_receive() -> Message:
            try:
                return await inbox.receive()
            except anyio.EndOfStream:
                return {"type": "http.disconnect"}

        async with inbox, anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                await self.app(scope, app_receive, send)
            finally:
                tg.cancel_scope.cancel()


def get_request_token(request: HTTPConnection) -> CancelationToken:
    """The request's token (made here if the middleware is not installed).

    Without :class:`RequestCancelationMiddleware` nothing cancels it on disconnect.
    """
    token = request.scope.get(TOKEN_KEY)
    if not isinstance(token, CancelationToken):
        token = request.scope[TOKEN_KEY] = CancelationToken()
    return token


def _operation_for(request: HTTPConnection, timeout: float | None) -> Cancelable:
    name = f"{request.scope.get('method', 'WEBSOCKET')} {request.url.path}"
    metadata = {
        "method": request.scope.get("method"),
        "path": request.url.path,
        "client": request.client.host if request.client else None,
    }
    op = Cancelable.with_token(get_request_token(request), name=name, metadata=metadata)
    if timeout is None:
        default = request.scope.get(TIMEOUT_KEY)
        timeout = default if isinstance(default, (int, float)) else None
    if timeout is not None:
        op = Cancelable.with_timeout(timeout, name=name, metadata=metadata).add_token(
            get_request_token(request)
        )
    return op


async def cancelable_dependency(request: Request) -> Cancelable:
    """A FastAPI dependency: an operation cancelled when the client disconnects.

    Example::

        @app.get("/report")
        async def report(cancel: Cancelable = Depends(cancelable_dependency)):
            async with cancel:
                return await pool.submit(build_report)   # stopped in its worker too

    The operation is not entered: use it as ``async with cancel:``. Its timeout is
    the middleware's ``default_timeout``. Unlike the seed library's, it takes no
    ``timeout`` parameter: FastAPI would expose it to clients as a query parameter.
    A disconnect ends the block with :class:`SignalCancelation` (reason SIGNAL).
    """
    return _operation_for(request, None)


def with_cancelation(
    timeout: float | None = None, raise_on_cancel: bool = True
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Run an endpoint in its request's operation; map cancellations to HTTP errors.

    The endpoint must take a ``request: Request`` parameter. Inside it
    ``current_operation()`` is the request's operation. With ``raise_on_cancel`` a
    timeout becomes HTTP 504, a client disconnect 499 and any other cancellation
    503 (an :class:`HTTPException`); otherwise the :class:`CancelationError`
    propagates.
    """

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            request = kwargs.get("request")
            if request is None:
                request = next((a for a in args if isinstance(a, HTTPConnection)), None)
            if not isinstance(request, HTTPConnection):
                raise TypeError(
                    f"@with_cancelation needs the endpoint {fn.__name__} to take a "
                    f"`request: Request` parameter"
                )
            op = _operation_for(request, timeout)
            try:
                async with op:
                    return await fn(*args, **kwargs)
            except CancelationError as exc:
                if not raise_on_cancel:
                    raise
                raise _http_error(exc) from exc
            raise AssertionError("unreachable")  # pragma: no cover

        return wrapper

    return decorate


def _http_error(exc: CancelationError) -> HTTPException:
    if exc.reason is CancelationReason.TIMEOUT:
        return HTTPException(status_code=504, detail="Request timeout")
    if exc.reason is DISCONNECT_REASON:
        return HTTPException(status_code=499, detail="Client closed connection")
    return HTTPException(status_code=503, detail=f"Request cancelled: {exc.message}")


async def cancelable_streaming_response(
    generator: AsyncIterable[Any],
    cancelable: Cancelable,
    media_type: str = "text/plain",
    chunk_size: int | None = None,
) -> StreamingResponse:
    """A streaming response that stops when ``cancelable``'s tokens or timeout do.

    The response is sent after the endpoint returns, outside its ``async with``,
    so each wait for the next chunk runs in a short operation of its own (a cancel
    scope never spans a ``yield``). A cancelled ``text/event-stream`` ends with an
    ``event: cancelled`` message. ``chunk_size`` is accepted for the seed library's
    signature and unused.
    """
    linked = LinkedCancelationToken()
    for token in cancelable.tokens:
        linked.link(token)

    async def body() -> Any:
        try:
            async for chunk in cancelable_stream(
                generator, timeout=cancelable.timeout, token=linked, name=cancelable.name
            ):
                yield chunk
        except CancelationError as exc:
            logger.info(
                "cancelpool: streaming response cancelled",
                extra={"operation_id": cancelable.context.id, "cancel_reason": exc.reason},
            )
            if media_type == "text/event-stream":
                yield "event: cancelled\ndata: Stream cancelled\n\n"
        finally:
            linked.unlink_all()

    return StreamingResponse(body(), media_type=media_type)


class CancelableWebSocket:
    """A websocket whose sends and receives are checkpoints of ``cancelable``.

    Use it inside ``async with cancelable:``; once the operation is cancelled, the
    next call unwinds to that block, which raises the matching error.
    """

    def __init__(self, websocket: Any, cancelable: Cancelable) -> None:
        self.websocket = websocket
        self.cancelable = cancelable

    async def accept(self, **kwargs: Any) -> None:
        """Accept the connection; reports progress "WebSocket connected"."""
        await self.websocket.accept(**kwargs)
        await self.cancelable.report_progress("WebSocket connected")

    async def send_text(self, data: str) -> None:
        """Check cancellation, then send."""
        await self.cancelable.check_cancelation()
        await self.websocket.send_text(data)

    async def send_json(self, data: Any) -> None:
        """Check cancellation, then send."""
        await self.cancelable.check_cancelation()
        await self.websocket.send_json(data)

    async def receive_text(self) -> str:
        """Check cancellation, then receive (a cancellation interrupts the wait)."""
        await self.cancelable.check_cancelation()
        return str(await self.websocket.receive_text())

    async def receive_json(self) -> Any:
        """Check cancellation, then receive (a cancellation interrupts the wait)."""
        await self.cancelable.check_cancelation()
        return await self.websocket.receive_json()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection; reports progress "WebSocket closed"."""
        await self.websocket.close(code, reason)
        await self.cancelable.report_progress("WebSocket closed")


# The double-l spellings of the seed documents.
RequestCancellationMiddleware = RequestCancelationMiddleware
cancellable_dependency = cancelable_dependency
cancellable_streaming_response = cancelable_streaming_response
CancellableWebSocket = CancelableWebSocket
with_cancellation = with_cancelation

"""The HTTP API: JSON in, JSON out, a 4xx with one sentence for every bad request.

``GET`` never changes anything. ``POST`` takes a JSON object (``Content-Type:
application/json``: an HTML form elsewhere cannot send one without the browser asking
this origin first, and the gate refuses other origins anyway). The queue's own
validators decide what is valid, so the API accepts exactly what ``Queue`` does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..queue import (
    InvalidJob,
    JobNotFound,
    JobStatus,
    QueueError,
    TaskNotAllowed,
)
from ..queue._model import check_job_id, check_limit, check_message, check_pattern
from ._events import EventHub
from ._openapi import openapi_document
from ._reader import JobReader, job_row

#: Largest request body: a submit's arguments are at most 1 MiB of JSON (the queue's
#: limit); a little more leaves room for the rest of the object.
MAX_BODY = (1 << 20) + 64 * 1024
#: Rows per page by default and at most: a page of the table, not a dump.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Seconds between SSE comments when nothing changes, so proxies and the browser see a
#: live connection (and a dead one is noticed by the write).
KEEPALIVE = 15.0
#: Submit's own keyword options: a task's keyword argument of one of these names would
#: collide with them in ``Queue.submit``.
SUBMIT_OPTIONS = ("name", "timeout", "priority", "parent")


class ApiError(Exception):
    """A request the API refuses: its status code and the sentence to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    """Turn the queue's refusals into 4xx answers with their sentence; an unexpected
    error becomes a 500 that says where to look, never a traceback."""

    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except TaskNotAllowed as exc:
            return error_response(403, str(exc))
        except InvalidJob as exc:
            return error_response(400, str(exc))
        except JobNotFound as exc:
            return error_response(404, str(exc))
        except sqlite3.OperationalError as exc:
            return error_response(503, f"the queue database is busy or failing: {exc}")
        except QueueError as exc:
            return error_response(409, str(exc))

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


class Api:
    """The endpoints, given the reader and the hub they share."""

    def __init__(self, reader: JobReader, hub: EventHub) -> None:
        self.reader = reader
        self.hub = hub
        self.queue = reader.queue

    # -- reading ------------------------------------------------------------------------------
    async def list_jobs(self, request: Request) -> Response:
        params = request.query_params
        statuses = tuple(_status(s) for s in params.getlist("status") if s != "")
        pattern = params.get("pattern") or None
        if pattern is not None:
            check_pattern(pattern)
        limit = _int_param(params.get("limit"), "limit", DEFAULT_LIMIT)
        check_limit(limit)
        if limit > MAX_LIMIT:
            raise ApiError(400, f"limit must be at most {MAX_LIMIT} (use the cursor for more)")
        cursor_text = params.get("cursor")
        cursor = None if cursor_text in (None, "") else _int_param(cursor_text, "cursor", 0)
        if cursor is not None:
            check_job_id(cursor)
        rows, next_cursor = await anyio.to_thread.run_sync(
            lambda: self.reader.page(status=statuses, pattern=pattern, limit=limit, before=cursor)
        )
        return JSONResponse({"jobs": rows, "next_cursor": next_cursor})

    async def get_job(self, request: Request) -> Response:
        job_id = _job_id(request)
        job = await anyio.to_thread.run_sync(self.queue.get, job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id}")
        children, cut = await anyio.to_thread.run_sync(self.reader.children, job_id)
        data = job.to_dict()
        data["progress_history"] = self.hub.history(job_id)
        data["children"] = children
        data["children_truncated"] = cut
        return JSONResponse(data)

    async def stats(self, request: Request) -> Response:
        info = await anyio.to_thread.run_sync(self.queue.statistics)
        counts = {status.value: getattr(info, status.value) for status in JobStatus}
        servers = [
            {
                "id": s.id,
                "pid": s.pid,
                "workers": s.workers,
                "allow": list(s.allow),
                "started_at": s.started_at,
                "heartbeat": s.heartbeat,
            }
            for s in info.servers
        ]
        return JSONResponse({"jobs": counts, "servers": servers, **self.hub.series()})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def events(self, request: Request) -> Response:
        return StreamingResponse(
            self._stream(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def _stream(self) -> AsyncIterator[str]:
        with self.hub.subscribe() as messages:
            yield "retry: 2000\n\n"
            while True:
                with anyio.move_on_after(KEEPALIVE):
                    try:
                        message = await messages.receive()
                    except anyio.EndOfStream:
                        return  # the hub stopped or dropped us: the page reconnects
                    yield f"event: update\ndata: {json.dumps(message)}\n\n"
                    continue
                yield ": keep-alive\n\n"

    # -- changing -----------------------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        body = await _json_object(request)
        _only(body, ("task", "args", "kwargs", *SUBMIT_OPTIONS))
        task = body.get("task")
        if not isinstance(task, str):
            raise ApiError(400, "give the task as a string 'package.module:function'")
        args = body.get("args", [])
        kwargs = body.get("kwargs", {})
        if not isinstance(args, list):
            raise ApiError(400, "args must be a JSON array (the positional arguments)")
        if not isinstance(kwargs, dict):
            raise ApiError(400, "kwargs must be a JSON object (the keyword arguments)")
        clash = sorted(set(kwargs) & set(SUBMIT_OPTIONS))
        if clash:
            raise ApiError(
                400,
                f"kwargs may not be named {', '.join(clash)} through this API (they are "
                "submit's own options); rename the task's parameters or submit from Python",
            )
        options = {key: body[key] for key in SUBMIT_OPTIONS if key in body}
        if "priority" in options and options["priority"] is None:
            del options["priority"]

        def submit() -> int:
            return self.queue.submit(task, *args, **options, **kwargs)

        job_id = await anyio.to_thread.run_sync(submit)
        self.hub.touch([job_id])
        return JSONResponse({"id": job_id}, status_code=201)

    async def cancel_job(self, request: Request) -> Response:
        job_id = _job_id(request)
        body = await _json_object(request, optional=True)
        _only(body, ("message",))
        return await self._cancel([job_id], None, body.get("message"))

    async def cancel_pattern(self, request: Request) -> Response:
        body = await _json_object(request)
        _only(body, ("pattern", "message"))
        if "pattern" not in body:
            raise ApiError(400, 'give the names to cancel as {"pattern": "user_42_*"}')
        return await self._cancel([], check_pattern(body["pattern"]), body.get("message"))

    async def _cancel(self, ids: list[int], pattern: str | None, message: Any) -> Response:
        message = check_message(message)
        outcome = await anyio.to_thread.run_sync(
            lambda: self.queue.cancel_jobs(ids, name_pattern=pattern, message=message)
        )
        self.hub.touch([*outcome.cancelled, *outcome.requested], cancelled=True)
        return JSONResponse(
            {
                "cancelled": list(outcome.cancelled),
                "requested": list(outcome.requested),
                "already_finished": list(outcome.finished),
            }
        )


# -- input -------------------------------------------------------------------------------------
def _status(value: str) -> str:
    try:
        return JobStatus(value).value
    except ValueError:
        choices = ", ".join(s.value for s in JobStatus)
        raise ApiError(400, f"status {value!r} is not one of {choices}") from None


def _int_param(text: str | None, what: str, default: int) -> int:
    if text is None or text == "":
        return default
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 20:
        raise ApiError(400, f"{what} must be an integer, not {text[:40]!r}")
    return int(text)


def _job_id(request: Request) -> int:
    text = request.path_params["job_id"]
    return check_job_id(_int_param(text, "a job id", 0))


async def _json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; 4xx for another type, size, or not JSON."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY} bytes")
    if not data and optional:
        return {}
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "send the request body as JSON (Content-Type: application/json)")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return value


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(
            400, f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(allowed)}"
        )


__all__ = ("Api", "ApiError", "error_response", "guarded", "job_row")

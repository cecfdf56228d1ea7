"""The Starlette application: the gate around the API routes and the page's files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..queue import Queue
from ._api import Api, error_response, guarded
from ._events import EventHub
from ._reader import JobReader
from ._security import Gate

#: The page's files: shipped in the package (no CDN), served by name only (no path
#: from the request ever reaches the file system).
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def create_app(
    queue: Queue, *, token: str, port: int, hosts: frozenset[str] | None = None
) -> Starlette:
    """The dashboard's ASGI app over ``queue``.

    Args:
        queue: an open queue; the app reads and cancels through it and does not close it.
        token: what every request must present (see ``_security``).
        port: the port it is served on (names the token cookie).
        hosts: the ``Host`` headers accepted (``host:port``, lower case), or None for any.

    Its lifespan runs the event hub; at shutdown the hub is cancelled and every open
    event stream ends.
    """
    reader = JobReader(queue)
    hub = EventHub(reader)
    api = Api(reader, hub)
    files = {path: (_asset(name), kind) for path, (name, kind) in ASSETS.items()}

    async def asset(request: Request) -> Response:
        body, kind = files[request.url.path]
        return Response(body, media_type=kind)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(hub.run)
            try:
                yield
            finally:
                hub.close()
                tg.cancel_scope.cancel()

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return error_response(404, f"no such address: {request.url.path}")
        if status == 405:
            return error_response(405, f"{request.method} is not allowed on {request.url.path}")
        return error_response(status, "the request could not be handled")

    async def crashed(request: Request, exc: Exception) -> Response:
        # A bug of ours: say so in one sentence; the traceback stays in the server's log.
        return error_response(500, "internal error in cancelpool web; see its log")

    routes: list[Any] = [Route(path, asset, methods=["GET"]) for path in ASSETS]
    routes += [
        Route("/api/openapi.json", guarded(api.openapi), methods=["GET"]),
        Route("/api/jobs", guarded(api.list_jobs), methods=["GET"]),
        Route("/api/jobs", guarded(api.submit), methods=["POST"]),
        Route("/api/jobs/{job_id}", guarded(api.get_job), methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", guarded(api.cancel_job), methods=["POST"]),
        Route("/api/cancel", guarded(api.cancel_pattern), methods=["POST"]),
        Route("/api/stats", guarded(api.stats), methods=["GET"]),
        Route("/api/events", api.events, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Gate, token=token, port=port, hosts=hosts)],
        exception_handlers={HTTPException: not_found, Exception: crashed},
        lifespan=lifespan,
    )

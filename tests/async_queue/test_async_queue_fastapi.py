"""AsyncQueue in FastAPI handlers served by a real uvicorn server, against a real
``cancelpool serve``, on SQLite and PostgreSQL (uvicorn runs on asyncio only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import anyio
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import httpx
from fastapi import Depends, FastAPI
from qhelpers import BACKSTOP, DEMO

from cancelpool import AsyncQueue, Cancelable, SignalCancelation
from cancelpool.integrations.fastapi import RequestCancelationMiddleware, cancelable_dependency
from cancelpool.queue import JobStatus
from integrations._server import read_response, send_request, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_app(aq: AsyncQueue) -> FastAPI:
    app = FastAPI()

    @app.post("/sum")
    async def submit(a: int, b: int) -> dict[str, int]:
        return {"id": await aq.submit(f"{DEMO}:add", a, b, name="web_sum")}

    @app.get("/jobs/{job_id}")
    async def result(job_id: int) -> dict[str, Any]:
        record = await aq.wait(job_id, timeout=BACKSTOP, need_server=True)
        return {"status": record.status.value, "result": record.result}

    return app


async def test_handlers_submit_and_wait_with_many_clients_at_once(
    db: Any, start_server: Callable[[], Any]
) -> None:
    start_server()
    count = 20
    results: dict[int, Any] = {}
    async with AsyncQueue(db, connections=3) as aq, serve(make_app(aq)) as port:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=BACKSTOP
        ) as client:

            async def one(i: int) -> None:
                submitted = await client.post("/sum", params={"a": i, "b": 100})
                assert submitted.status_code == 200, submitted.text
                job_id = submitted.json()["id"]
                done = await client.get(f"/jobs/{job_id}")
                assert done.status_code == 200, done.text
                results[i] = done.json()

            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(one, i)
        assert results == {i: {"status": "completed", "result": i + 100} for i in range(count)}
        stats = aq.connection_statistics()
        assert stats.opened <= 3
        assert (stats.running, stats.waiting) == (0, 0)


async def test_a_client_that_hangs_up_cancels_the_handlers_wait(db: Any) -> None:
    entered, ended = anyio.Event(), anyio.Event()
    seen: dict[str, Any] = {}
    async with AsyncQueue(db) as aq:
        job_id = await aq.submit(f"{DEMO}:add", 1, 2)  # no server: it stays queued
        app = FastAPI()
        app.add_middleware(RequestCancelationMiddleware)

        @app.get("/wait/{job_id}")
        async def wait(
            job_id: int, cancel: Annotated[Cancelable, Depends(cancelable_dependency)]
        ) -> str:
            try:
                async with cancel:
                    entered.set()
                    await aq.wait(job_id)
            except SignalCancelation as exc:
                seen["error"] = exc
                raise
            finally:
                ended.set()
            return "never"

        async with serve(app) as port:
            client = await send_request(port, f"/wait/{job_id}")
            with anyio.fail_after(BACKSTOP):
                await entered.wait()
                await client.aclose()  # the client goes away
                await ended.wait()
        assert isinstance(seen["error"], SignalCancelation)
        stats = aq.connection_statistics()
        assert (stats.running, stats.waiting, stats.idle) == (0, 0, stats.opened)
        job = await aq.get(job_id)
        assert job is not None
        assert job.status is JobStatus.QUEUED


async def test_an_invalid_argument_is_a_clean_error_response(db: Any) -> None:
    async with AsyncQueue(db) as aq:
        app = FastAPI()

        @app.get("/bad")
        async def bad() -> str:
            from cancelpool.queue import InvalidJob

            try:
                await aq.submit("os:system; rm", "x")
            except InvalidJob as exc:
                return f"refused: {exc}"
            return "accepted"

        async with serve(app) as port:
            client = await send_request(port, "/bad")
            try:
                body = await read_response(client)
            finally:
                await client.aclose()
        assert b"refused" in body
        assert await aq.list() == []

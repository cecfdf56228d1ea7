"""FastAPI: when the client hangs up, the request stops, and so does its pool job.

Job functions live at module level (worker processes import this file to find them);
the server and the client run under ``if __name__ == "__main__"``. Needs
``pip install cancelpool[fastapi] uvicorn``.
"""

from __future__ import annotations

import socket
from typing import Annotated

import anyio
import uvicorn
from fastapi import Depends, FastAPI

from cancelpool import Cancelable, CancelationError, CancelPool, current_operation
from cancelpool.integrations.fastapi import RequestCancelationMiddleware, cancelable_dependency


async def build_report(rows: int) -> int:
    """A long job: checks its cancellation between rows."""
    op = current_operation()
    assert op is not None
    for row in range(rows):
        await op.report_progress(f"row {row}")
        await anyio.sleep(0.05)
    return rows


async def main() -> None:
    app = FastAPI()
    app.add_middleware(RequestCancelationMiddleware)
    job_started, request_ended = anyio.Event(), anyio.Event()
    handles = []

    with CancelPool(workers=1) as pool:

        @app.get("/report")
        async def report(cancel: Annotated[Cancelable, Depends(cancelable_dependency)]) -> int:
            handle = pool.submit(build_report, 10_000)
            handles.append(handle)
            try:
                async with cancel:
                    async for _ in handle.progress():  # the job's first report
                        job_started.set()
                        break
                    return await handle
            except CancelationError as exc:
                print(f"request stopped: {exc.message} ({exc.reason.value})")
                raise
            finally:
                request_ended.set()

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="critical"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            while not server.started:
                await anyio.sleep(0.01)
            client = await anyio.connect_tcp("127.0.0.1", port)
            await client.send(b"GET /report HTTP/1.1\r\nHost: demo\r\n\r\n")
            with anyio.fail_after(30):
                await job_started.wait()
                print("the job is running in its worker; the client hangs up")
                await client.aclose()
                await request_ended.wait()
            # The handler's cancellation cancelled the job it awaited, in its worker.
            error = await anyio.to_thread.run_sync(handles[0].exception, 30)
            print(f"job in its worker: {handles[0].status.value} ({type(error).__name__})")
            server.should_exit = True
        sock.close()
    print("FastAPI example complete.")


if __name__ == "__main__":
    anyio.run(main)

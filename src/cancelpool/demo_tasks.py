"""Demo tasks for ``cancelpool demo`` and the queue's own tests and benchmark.

Run them with a server that allows them::

    cancelpool serve --allow 'cancelpool.demo_tasks:*'
    cancelpool submit cancelpool.demo_tasks:crunch '[20]' --name user_42_report

Each shows one thing a queued job can do: report progress, keep a partial result that
survives cancellation, honour a timeout, fail, or poll its token from a thread.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from ._core._cancelable import Cancelable, current_operation


def _op() -> Cancelable:
    op = current_operation()
    if op is None:
        raise RuntimeError("demo tasks run inside a cancelpool job (a Cancelable)")
    return op


async def crunch(steps: int = 20, delay: float = 0.05) -> dict[str, int]:
    """Do ``steps`` slow steps, reporting progress and keeping the partial sum."""
    op = _op()
    total = 0
    for step in range(1, steps + 1):
        await anyio.sleep(delay)  # stands for one slow call (an API, a model, a disk)
        total += step
        partial = {"steps_done": step, "sum": total}
        op.context.partial_result = partial
        await op.report_progress(
            f"step {step}/{steps}", {"done": step, "total": steps, "partial_result": partial}
        )
    return {"steps": steps, "sum": total}


async def fetch_pages(pages: int = 10, delay: float = 0.1) -> list[str]:
    """'Download' ``pages`` pages; a cancellation keeps the titles fetched so far."""
    op = _op()
    titles: list[str] = []
    op.context.partial_result = titles  # updated in place: always the latest
    for page in range(1, pages + 1):
        await anyio.sleep(delay)  # stands for one HTTP request
        titles.append(f"page-{page}")
        await op.report_progress(f"page {page}/{pages}", {"done": page, "total": pages})
    return titles


async def fail(message: str = "the demo task failed on purpose") -> None:
    """Fail after a short moment (the error and traceback are kept)."""
    await anyio.sleep(0.05)
    raise ValueError(message)


async def add(a: float, b: float) -> float:
    """The trivial job of the throughput benchmark."""
    return a + b


async def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments as received (they went through JSON)."""
    return {"args": list(args), "kwargs": kwargs}


async def wait_for_cancel(ready: str = "waiting") -> None:
    """Wait until cancelled; the partial result records when the cancellation was seen
    (``time.time()``), for measuring the latency of ``cancelpool cancel``."""
    op = _op()
    await op.report_progress(ready, {"started_at": time.time()})
    try:
        await anyio.sleep_forever()
    finally:
        op.context.partial_result = {"cancel_seen_at": time.time()}


def count_primes(limit: int = 200_000) -> int:
    """A blocking CPU-bound task: runs in a thread, polls its token to stop early."""
    op = _op()
    count = 0
    for n in range(2, limit):
        if n % 1000 == 0:
            op.token.check()  # raises if the job was cancelled
            op.context.partial_result = {"checked": n, "primes": count}
        if all(n % d for d in range(2, int(n**0.5) + 1)):
            count += 1
    return count

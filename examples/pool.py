"""A tour of CancelPool: jobs in worker processes that can really be stopped.

Run it: ``python examples/pool.py``. Job functions live at module level (the workers
import this file to find them), and the pool is used under ``if __name__ ==
"__main__"``, as with any multiprocessing code.
"""

from __future__ import annotations

import time

import anyio

from cancelpool import CancelPool, JobCancelled, OperationStatus, current_operation, current_pool


async def crawl(site: str, pages: int) -> list[str]:
    """Fetch pages one by one, keeping what was fetched as the partial result."""
    op = current_operation()
    assert op is not None
    done: list[str] = []
    for page in range(1, pages + 1):
        await anyio.sleep(0.02)  # stands for a network call
        done.append(f"{site}/page-{page}")
        op.context.partial_result = list(done)
        await op.report_progress(f"{site}: {page}/{pages}", {"progress": 100 * page / pages})
    return done


def checksum(numbers: int) -> int:
    """Plain CPU-bound code: it polls the job's token, a read of shared memory."""
    op = current_operation()
    assert op is not None
    total = 0
    for n in range(numbers):
        if n % 10_000 == 0:
            op.token.check()  # raises once the job is cancelled or times out
        total = (total + n * n) % 1_000_003
    return total


async def report(user: str) -> list[list[str]]:
    """A parent job: its children run on any worker and die with it."""
    pool = current_pool()
    children = [pool.submit(crawl, f"{user}.example/{part}", 500) for part in ("a", "b")]
    return [await child for child in children]


def main() -> None:
    with CancelPool(workers=2) as pool:
        # Results, progress and a plain function in a worker thread.
        quick = pool.submit(crawl, "docs.example", 3)
        quick.on_progress(lambda job_id, message, meta: print(f"  progress {message}"))
        print("quick crawl:", quick.result())
        print("checksum:", pool.submit(checksum, 200_000).result())

        # Cancel every job of one user by name pattern; others keep running.
        jobs = [
            pool.submit(crawl, f"site{i}.example", 500, name=f"user_{user}_crawl_{i}")
            for i, user in enumerate([42, 42, 7])
        ]
        while pool.statistics().running < 3:
            time.sleep(0.01)
        time.sleep(0.1)  # let them fetch a few pages
        print("cancelled for user 42:", pool.cancel_all(name_pattern="user_42_*"))
        for handle in jobs[:2]:
            try:
                handle.result()
            except JobCancelled as stop:
                kept = len(stop.partial_result or [])
                print(f"  {handle.name}: {stop.reason.value}, kept {kept} pages")
        print(f"  {jobs[2].name} still {jobs[2].status.value}")
        jobs[2].cancel("not needed any more")

        # A timeout, enforced in the worker, for async and plain functions alike.
        slow = [
            pool.submit(crawl, "slow.example", 500, timeout=0.1),
            pool.submit(checksum, 10**9, timeout=0.1),
        ]
        for job in slow:
            try:
                job.result()
            except JobCancelled as stop:
                print(f"  {job.name} timed out: {stop.message}")

        # A parent job and its children in other processes: one cancel stops all.
        parent = pool.submit(report, "ada", name="report")
        while len(pool.jobs(status=OperationStatus.RUNNING)) < 3:  # parent + 2 children
            time.sleep(0.01)
        parent.cancel("the user closed the page")
        for child in pool.jobs(name_pattern="crawl"):
            if child.parent is parent:
                stop = child.exception()
                assert isinstance(stop, JobCancelled)
                print(f"  child {child.id}: {stop.reason.value} ({stop.message})")
        print("statistics:", pool.statistics())
    print("Pool tour complete.")


if __name__ == "__main__":
    main()

"""A guided tour of cancelpool's core, printing what happens at each stop.

Run it: ``python examples/tour.py`` (about a second).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import anyio

from cancelpool import (
    AllOfSource,
    AnyOfSource,
    Cancelable,
    CancelationError,
    CancelationToken,
    ConditionSource,
    ManualCancelation,
    TimeoutCancelation,
    TimeoutSource,
)


async def stop_1_timeout() -> None:
    print("\n1. A deadline")
    try:
        async with Cancelable.with_timeout(0.2, name="slow-download"):
            print("   downloading... (this would take forever)")
            await anyio.sleep_forever()
    except TimeoutCancelation as exc:
        print(f"   stopped: {exc}")


async def stop_2_token_from_a_thread() -> None:
    print("\n2. A cancel button pressed in another thread")
    token = CancelationToken()
    started = threading.Event()

    def gui_thread() -> None:
        started.wait()
        print("   [gui thread] user clicks 'Stop'")
        token.cancel_sync("user clicked Stop")

    thread = threading.Thread(target=gui_thread)
    thread.start()
    try:
        async with Cancelable.with_token(token, name="export"):
            print("   exporting...")
            started.set()
            await anyio.sleep_forever()
    except ManualCancelation as exc:
        print(f"   stopped: {exc}")
    thread.join()


async def stop_3_progress() -> None:
    print("\n3. Progress reports")
    async with Cancelable(name="resize-images") as op:
        op.on_progress(lambda op_id, message, meta: print(f"   progress: {message} {meta}"))
        for done in (1, 2, 3):
            await anyio.sleep(0.01)  # stands for resizing one image
            await op.report_progress(f"{done}/3 images", {"done": done})


async def fetch_page(page: Cancelable) -> None:
    async with page:
        await anyio.sleep_forever()  # stands for a slow page


async def stop_4_parent_and_children() -> None:
    print("\n4. A parent operation takes its children with it")
    token = CancelationToken()
    try:
        async with Cancelable.with_token(token, name="crawl") as crawl:
            pages = [Cancelable(name=f"page-{i}", parent=crawl) for i in (1, 2, 3)]
            async with anyio.create_task_group() as tg:
                for page in pages:
                    tg.start_soon(fetch_page, page)
                await anyio.wait_all_tasks_blocked()
                print("   3 pages are being fetched; cancelling the crawl")
                await token.cancel("crawl no longer needed")
    except ManualCancelation as exc:
        print(f"   crawl stopped: {exc}")
    for page in pages:
        ctx = page.context
        print(f"   {ctx.name}: {ctx.status.value}, reason: {ctx.cancel_reason}")


async def stop_5_any_of_all_of() -> None:
    print("\n5. Combining sources: any-of and all-of")
    budget_spent = {"value": False}
    any_of = AnyOfSource(
        [TimeoutSource(2.0), ConditionSource(lambda: budget_spent["value"], 0.01, "budget")]
    )
    try:
        async with Cancelable(name="search").add_source(any_of):
            await anyio.sleep(0.02)  # stands for work that spends the budget
            budget_spent["value"] = True
            await anyio.sleep_forever()
    except CancelationError as exc:
        print(f"   any-of fired first on: {any_of.message} ({exc.reason.value})")

    items = {"count": 0}
    all_of = AllOfSource(
        [TimeoutSource(0.05), ConditionSource(lambda: items["count"] >= 5, 0.01, "5 items")]
    )
    try:
        async with Cancelable(name="batch").add_source(all_of):
            while True:
                await anyio.sleep(0.005)  # stands for fetching one item
                items["count"] += 1
    except CancelationError as exc:
        print(f"   all-of fired once both held: {exc.message} (items: {items['count']})")


async def numbers() -> AsyncIterator[int]:
    for n in range(1, 1000):
        await anyio.sleep(0.01)  # stands for waiting on the network
        yield n


async def stop_6_partial_result() -> None:
    print("\n6. Keeping the partial result of a cancelled operation")
    try:
        async with Cancelable.with_timeout(0.1, name="ingest") as op:
            async for _ in op.stream(numbers(), buffer_partial=True):
                pass
    except TimeoutCancelation as exc:
        kept = exc.partial_result["buffer"]
        print(f"   timed out, but kept {len(kept)} items: {kept[:5]}...")


async def main() -> None:
    print("cancelpool tour")
    await stop_1_timeout()
    await stop_2_token_from_a_thread()
    await stop_3_progress()
    await stop_4_parent_and_children()
    await stop_5_any_of_all_of()
    await stop_6_partial_result()
    print("\nTour complete.")


if __name__ == "__main__":
    anyio.run(main)

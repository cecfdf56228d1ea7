"""Cancelling async work from plain threads: tokens, the registry, and thread polling."""

from __future__ import annotations

import threading
import time

import anyio

from cancelpool import (
    Cancelable,
    CancelationError,
    CancelationToken,
    ManualCancelation,
    ThreadSafeRegistry,
    current_operation,
)


async def token_from_a_thread() -> None:
    token = CancelationToken()
    token.register_callback(lambda message: print(f"  callback: token cancelled ({message})"))
    working = threading.Event()

    def stop_button() -> None:  # e.g. a GUI or a Flask view, no event loop here
        working.wait()
        token.cancel_sync("stop button")

    thread = threading.Thread(target=stop_button)
    thread.start()
    try:
        async with Cancelable.with_token(token, name="render"):
            working.set()
            await anyio.sleep_forever()  # woken at once by the thread, no polling
    except ManualCancelation as exc:
        print(f"  render stopped: {exc}")
    thread.join()


async def registry_from_a_thread() -> None:
    registry = ThreadSafeRegistry()
    stopped: list[str] = []

    async def job(name: str) -> None:
        try:
            async with Cancelable(name=name, register=True):
                await anyio.sleep_forever()
        except CancelationError:
            stopped.append(name)

    def admin() -> int:  # a sync endpoint: "cancel every job of user 42"
        return registry.cancel_all(name_pattern="user_42_*", message="account closed")

    async with anyio.create_task_group() as tg:
        for name in ("user_42_a", "user_42_b", "user_7_a"):
            tg.start_soon(job, name)
        await anyio.wait_all_tasks_blocked()
        count = await anyio.to_thread.run_sync(admin)
        print(f"  admin thread cancelled {count} jobs")
        await anyio.wait_all_tasks_blocked()
        print(f"  stopped: {sorted(stopped)}; user_7_a still runs")
        tg.cancel_scope.cancel()


async def polling_in_a_worker_thread() -> None:
    def crunch() -> None:
        op = current_operation()  # run_in_thread carries the operation along
        assert op is not None
        while True:
            op.token.check()  # cheap: a flag and a clock read
            time.sleep(0.005)  # stands for one round of CPU-bound work

    try:
        async with Cancelable.with_timeout(0.1, name="crunch") as op:
            await op.run_in_thread(crunch)
    except CancelationError as exc:
        print(f"  worker thread noticed: {exc}")


async def main() -> None:
    print("A token cancelled from a thread:")
    await token_from_a_thread()
    print("The registry, used from a thread:")
    await registry_from_a_thread()
    print("Synchronous code in a worker thread polls its operation:")
    await polling_in_a_worker_thread()


if __name__ == "__main__":
    anyio.run(main)

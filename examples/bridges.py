"""Bridges between threads and the event loop.

* ContextBridge: a blocking function in a thread still sees ``current_operation()``.
* AnyioBridge: plain threads hand calls to the event loop (here, a sensor thread
  pushing readings into async code).
"""

from __future__ import annotations

import threading

import anyio

import cancelpool
from cancelpool import AnyioBridge, Cancelable, ContextBridge, current_operation


def blocking_report() -> str:
    op = current_operation()
    assert op is not None
    op.token.check()  # a cancelled operation would stop the thread here
    return f"report built in a thread for operation {op.name!r}"


async def context_bridge() -> None:
    async with Cancelable.with_timeout(5.0, name="monthly-report"):
        print(f"  {await ContextBridge.run_in_thread_with_context(blocking_report)}")
        snapshot = ContextBridge.copy_context()

    def own_thread() -> None:  # a thread we start ourselves
        with ContextBridge.restore_context(snapshot):
            op = current_operation()
            print(f"  own thread sees {op.name if op else None!r}")
        print(f"  and nothing once the block ends: {current_operation()}")

    thread = threading.Thread(target=own_thread)
    thread.start()
    thread.join()


async def anyio_bridge() -> None:
    readings: list[float] = []
    finished = anyio.Event()

    async def store(value: float) -> None:  # async code, run on the event loop
        await anyio.sleep(0)  # stands for writing to a database
        readings.append(value)

    def sensor_thread(bridge: AnyioBridge) -> None:
        for i in range(10):
            bridge.call_soon_threadsafe(store, 20 + i / 10)
        # The module-level helper reaches the same (most recent) running bridge.
        cancelpool.call_soon_threadsafe(finished.set)

    async with AnyioBridge(buffer_size=100) as bridge:
        thread = threading.Thread(target=sensor_thread, args=(bridge,))
        thread.start()
        await finished.wait()
    thread.join()
    # Leaving the block ran every call already queued, including the async ones.
    print(f"  stored {len(readings)} readings from the sensor thread: {sorted(readings)[:3]}...")
    try:
        bridge.call_soon_threadsafe(store, 0.0)
    except RuntimeError as exc:
        print(f"  after the block: {exc}")


async def main() -> None:
    print("ContextBridge:")
    await context_bridge()
    print("AnyioBridge:")
    await anyio_bridge()


if __name__ == "__main__":
    anyio.run(main)

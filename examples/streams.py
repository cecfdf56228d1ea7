"""Consuming an async stream inside an operation, with progress and a partial result."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from cancelpool import Cancelable, CancelationToken, ManualCancelation


async def sensor_readings() -> AsyncIterator[float]:
    value = 20.0
    while True:
        await anyio.sleep(0.005)  # stands for waiting on the next reading
        value += 0.5
        yield value


async def main() -> None:
    token = CancelationToken()
    try:
        async with Cancelable.with_token(token, name="sensor") as op:
            op.on_progress(lambda op_id, message, meta: print(f"  progress: {message}"))
            stream = op.stream(sensor_readings(), report_interval=5, buffer_partial=True)
            async for reading in stream:
                if reading >= 30.0:
                    print(f"  reading {reading} is too hot: stopping the stream")
                    token.cancel_sync("temperature limit reached")
    except ManualCancelation as exc:
        readings = exc.partial_result["buffer"]
        print(f"  stopped: {exc}")
        print(f"  kept {len(readings)} readings, last {readings[-1]}")


if __name__ == "__main__":
    anyio.run(main)

"""Wrapping callables so that each call checks cancellation first (retries, batches)."""

from __future__ import annotations

import anyio

from cancelpool import Cancelable, CancelationError, CancelationToken

attempts = {"count": 0}


async def flaky_fetch(url: str) -> str:
    attempts["count"] += 1
    await anyio.sleep(0.01)  # stands for the request
    if attempts["count"] < 3:
        raise ConnectionError(f"attempt {attempts['count']} failed")
    return f"{url}: 200 OK"


def parse(text: str) -> int:
    return len(text)


async def retry_loop() -> None:
    async with Cancelable.with_timeout(5.0, name="fetch-with-retries") as op:
        fetch = op.wrap(flaky_fetch)
        for _ in range(5):
            try:
                print(f"  got {await fetch('https://example.com')}")
                break
            except ConnectionError as exc:
                print(f"  {exc}; retrying")


async def batch_stops_between_items() -> None:
    token = CancelationToken()
    done: list[int] = []
    try:
        async with Cancelable.with_token(token, name="batch") as op, op.wrapping() as call:
            for item in range(10):
                done.append(await call(parse, "x" * item))
                if item == 3:
                    token.cancel_sync("enough for today")
    except CancelationError as exc:
        print(f"  stopped after {len(done)} items: {exc}")


async def main() -> None:
    print("A retry loop whose every attempt checks the deadline first:")
    await retry_loop()
    print("A batch whose next call is refused once the operation is cancelled:")
    await batch_stops_between_items()


if __name__ == "__main__":
    anyio.run(main)

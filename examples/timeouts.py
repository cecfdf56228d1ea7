"""Deadlines: per operation, nested budgets, and what a timeout leaves behind."""

from __future__ import annotations

from datetime import timedelta

import anyio

from cancelpool import Cancelable, TimeoutCancelation, cancelable


async def step(name: str, seconds: float) -> None:
    async with Cancelable.with_timeout(seconds, name=name):
        await anyio.sleep(0.05)  # stands for the step's work
    print(f"  {name}: done within {seconds:g}s")


async def main() -> None:
    print("A single deadline:")
    try:
        async with Cancelable.with_timeout(timedelta(milliseconds=100), name="query") as op:
            await anyio.sleep_forever()
    except TimeoutCancelation as exc:
        # TimeoutCancelation is also a builtin TimeoutError.
        print(f"  {exc} (a TimeoutError: {isinstance(exc, TimeoutError)})")
        print(f"  status={op.context.status.value} reason={op.context.cancel_reason}")

    print("Nested budgets: each step has its own limit, the job has a total one:")
    try:
        async with Cancelable.with_timeout(0.18, name="job"):
            for i in range(10):
                await step(f"step-{i}", seconds=1.0)
    except TimeoutCancelation as exc:
        print(f"  the total budget ran out first: {exc}")

    print("A decorated function gets a fresh deadline on every call:")

    @cancelable(timeout=0.1)
    async def fetch(delay: float) -> str:
        await anyio.sleep(delay)  # stands for a request taking `delay` seconds
        return f"fetched after {delay:g}s"

    print(f"  {await fetch(0.01)}")
    print(f"  {await fetch(0.01)}")
    try:
        await fetch(10)
    except TimeoutCancelation as exc:
        print(f"  slow call: {exc}")


if __name__ == "__main__":
    anyio.run(main)

"""Combining cancellation sources: stop on the first of several, or only when all hold."""

from __future__ import annotations

import anyio

from cancelpool import (
    AllOfSource,
    AnyOfSource,
    Cancelable,
    CancelationError,
    ConditionSource,
    TimeoutSource,
)


async def any_of() -> None:
    errors = {"count": 0}
    source = AnyOfSource(
        [
            TimeoutSource(5.0),
            ConditionSource(lambda: errors["count"] >= 3, 0.01, "too many errors"),
        ]
    )
    try:
        async with Cancelable(name="scrape").add_source(source):
            while True:
                await anyio.sleep(0.005)  # stands for fetching a page that fails
                errors["count"] += 1
    except CancelationError as exc:
        print(f"  any-of: stopped by {source.message!r} ({exc.reason.value})")


async def all_of() -> None:
    processed = {"count": 0}
    source = AllOfSource(
        [
            TimeoutSource(0.05),  # at least this long ...
            ConditionSource(lambda: processed["count"] >= 20, 0.005, "20 items"),  # ... and
        ]
    )
    try:
        async with Cancelable(name="warm-up").add_source(source):
            while True:
                await anyio.sleep(0.001)  # stands for processing one item
                processed["count"] += 1
    except CancelationError as exc:
        print(f"  all-of: {exc.message} after {processed['count']} items")


async def main() -> None:
    print("Any-of (OR): the first source to fire cancels:")
    await any_of()
    print("All-of (AND): cancels only once every source has fired:")
    await all_of()


if __name__ == "__main__":
    anyio.run(main)

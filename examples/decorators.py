"""The decorators: an operation per call, a shared operation, and injection."""

from __future__ import annotations

import anyio

from cancelpool import (
    Cancelable,
    CancelationError,
    CancelationToken,
    TimeoutCancelation,
    cancelable,
    cancelable_combine,
    cancelable_method,
    cancelable_with_token,
    current_operation,
    with_cancelable,
    with_current_operation,
)


@cancelable(timeout=0.1, name="resize")
async def resize(image: str, cancelable: Cancelable) -> str:
    # `cancelable` is injected because the function declares it.
    await cancelable.report_progress(f"resizing {image}")
    await anyio.sleep(0.01)  # stands for the work
    return f"{image} resized by operation {cancelable.context.name!r}"


stop = CancelationToken()


@cancelable_combine(
    Cancelable.with_timeout(0.1),
    Cancelable.with_token(stop),
    name="download",
)
async def download(url: str) -> str:
    await anyio.sleep_forever()  # stands for a download that hangs
    return url


@cancelable_with_token(stop, name="upload")
async def upload(path: str) -> str:
    await anyio.sleep_forever()
    return path


class Indexer:
    @cancelable_method(timeout=1.0)
    async def index(self, doc: str, cancelable: Cancelable) -> str:
        return f"{doc} indexed by {cancelable.context.name}"


@with_current_operation()
async def audit(event: str, operation: Cancelable | None = None) -> None:
    where = operation.context.name if operation else "no operation"
    print(f"  audit: {event} (in {where})")


async def main() -> None:
    print("@cancelable: a fresh operation (and deadline) per call")
    print(f"  {await resize('cat.png')}")
    print(f"  {await resize('dog.png')}")

    print("@cancelable_combine: every template's sources are enforced")
    try:
        await download("https://example.com/big.iso")
    except TimeoutCancelation as exc:
        print(f"  the combined timeout fired: {exc}")
    stop.cancel_sync("shutting down")
    for call in (download, upload):
        try:
            await call("x")
        except CancelationError as exc:
            print(f"  the token fired for {exc.context.name if exc.context else '?'}: {exc}")

    print("@cancelable_method: operations named after the class")
    print(f"  {await Indexer().index('report.pdf')}")

    print("@with_cancelable: several calls share one operation and one budget")
    batch = Cancelable.with_timeout(1.0, name="nightly-batch")

    @with_cancelable(batch)
    async def step(name: str) -> None:
        op = current_operation()
        print(f"  {name} runs in {op.name if op else None}")
        await audit(f"{name} done")

    async with batch:
        await step("export")
        await step("compress")

    print("@with_current_operation outside any operation:")
    await audit("idle")


if __name__ == "__main__":
    anyio.run(main)

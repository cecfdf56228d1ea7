"""Parent and child operations: who cancels whom, and how the reasons read."""

from __future__ import annotations

import anyio

from cancelpool import (
    Cancelable,
    CancelationError,
    CancelationToken,
    ManualCancelation,
    current_operation,
)


async def worker(name: str, started: list[Cancelable]) -> None:
    async with Cancelable(name=name) as op:  # its parent is the current operation
        started.append(op)
        parent = op.parent
        print(f"  {name} started under {parent.name if parent else None}")
        await anyio.sleep_forever()


async def main() -> None:
    print("Cancelling a parent stops every child, in every task:")
    token = CancelationToken()
    children: list[Cancelable] = []
    try:
        async with Cancelable.with_token(token, name="batch") as batch:
            batch.on_cancel(lambda ctx: print(f"  {ctx.name} cancelled: {ctx.cancel_message}"))
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(worker, f"worker-{i}", children)
                await anyio.wait_all_tasks_blocked()
                await token.cancel("batch aborted by operator")
    except ManualCancelation:
        pass
    for child in children:
        print(f"  {child.name}: reason={child.context.cancel_reason}")

    print("Cancelling a child leaves its parent running:")
    async with Cancelable(name="parent") as parent:
        try:
            async with Cancelable(name="child") as child:
                await child.cancel(message="this one is not needed")
        except CancelationError as exc:
            print(f"  child: {exc}")
        assert current_operation() is parent
        print(f"  parent still {parent.context.status.value}")

    print("A child cannot outlive its parent's deadline:")
    try:
        async with (
            Cancelable.with_timeout(0.05, name="request"),
            Cancelable.with_timeout(10, name="database-query"),
        ):
            await anyio.sleep_forever()
    except CancelationError as exc:
        print(f"  {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    anyio.run(main)

"""The operation registry: list running operations, cancel by name, read the history."""

from __future__ import annotations

import anyio

from cancelpool import Cancelable, CancelationError, OperationRegistry, OperationStatus


async def job(name: str) -> None:
    try:
        async with Cancelable(name=name, register=True):
            await anyio.sleep_forever()  # stands for a long job
    except CancelationError:
        pass


async def main() -> None:
    registry = OperationRegistry.get_instance()
    async with anyio.create_task_group() as tg:
        for name in ("user_42_report", "user_42_export", "user_7_report"):
            tg.start_soon(job, name)
        await anyio.wait_all_tasks_blocked()

        running = await registry.list_operations(status=OperationStatus.RUNNING)
        print(f"running: {sorted(ctx.name or '' for ctx in running)}")
        reports = await registry.list_operations(name_pattern="*_report")
        print(f"matching '*_report': {sorted(ctx.name or '' for ctx in reports)}")

        count = await registry.cancel_all(name_pattern="user_42_*", message="user deleted")
        print(f"cancelled {count} operations of user 42")
        await anyio.wait_all_tasks_blocked()

        (last,) = await registry.list_operations()
        print(f"still running: {last.name}")
        await registry.cancel_operation(last.id, message="shutting down")

    for ctx in await registry.get_history(limit=3):
        print(f"history: {ctx.name} {ctx.status.value} ({ctx.cancel_message})")
    stats = await registry.get_statistics()
    print(f"statistics: {stats.cancelled_operations} cancelled, {stats.running_operations} running")


if __name__ == "__main__":
    anyio.run(main)

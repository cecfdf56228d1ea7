"""Progress reports: callbacks, metadata, and reports bubbling up from children."""

from __future__ import annotations

from typing import Any

import anyio

from cancelpool import Cancelable


def log_report(operation_id: str, message: str, metadata: dict[str, Any]) -> None:
    print(f"  [log] {operation_id[:8]} {message} {metadata}")


async def push_to_ui(operation_id: str, message: str, metadata: dict[str, Any]) -> None:
    await anyio.sleep(0)  # stands for sending to a websocket
    if "percent" in metadata:
        print(f"  [ui]  {metadata['percent']:3d}%")


async def main() -> None:
    print("One operation, two callbacks (one sync, one async):")
    async with Cancelable(name="upload") as op:
        op.on_progress(log_report).on_progress(push_to_ui)
        for part in range(1, 5):
            await anyio.sleep(0.01)  # stands for uploading one part
            await op.report_progress(f"part {part}/4", {"percent": part * 25})

    print("Children report to their parent's callbacks too:")
    async with Cancelable(name="pipeline") as pipeline:
        pipeline.on_progress(lambda op_id, msg, meta: print(f"  [pipeline] {msg}"))
        for stage in ("extract", "transform", "load"):
            async with Cancelable(name=stage) as child:
                await anyio.sleep(0.01)  # stands for the stage's work
                await child.report_progress(f"{stage} finished")


if __name__ == "__main__":
    anyio.run(main)

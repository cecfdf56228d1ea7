"""Tasks of the dashboard tests (importable by the servers they start: PYTHONPATH)."""

from __future__ import annotations

import anyio

from cancelpool import current_operation

#: What a hostile job puts wherever it can: markup that runs script if a page ever
#: treats job text as HTML.
INJECTION = "<img src=x onerror=alert(1)>"


async def hostile(fail: bool = False) -> None:
    """Reports INJECTION as its progress message and partial result, then fails with it
    (``fail``) or waits until cancelled."""
    op = current_operation()
    assert op is not None
    op.context.partial_result = {"note": INJECTION}
    await op.report_progress(
        INJECTION, {"done": 1, "total": 2, "partial_result": {"note": INJECTION}}
    )
    if fail:
        raise ValueError(INJECTION)
    await anyio.sleep_forever()


async def steps(total: int = 100_000, delay: float = 0.05) -> dict[str, int]:
    """Report a step every ``delay`` seconds, keeping the steps done as the partial
    result, until ``total`` or cancelled."""
    op = current_operation()
    assert op is not None
    for step in range(1, total + 1):
        await anyio.sleep(delay)  # one slow call of a real job
        partial = {"steps_done": step}
        op.context.partial_result = partial
        await op.report_progress(
            f"step {step}", {"done": step, "total": total, "partial_result": partial}
        )
    return {"steps": total}

"""Logging: cancelpool's records as JSON lines (``configure_logging``), an
operation's context in your own records, and a failing hook that is logged, not
raised.

Runs with the standard library only.
"""

from __future__ import annotations

import io
import json

import anyio

from cancelpool import Cancelable, OperationContext, TimeoutCancelation
from cancelpool.utils.logging import configure_logging, get_logger


async def main() -> None:
    lines = io.StringIO()  # a real program logs to stderr or a file; read back here
    configure_logging("INFO", json_output=True, stream=lines)
    log = get_logger()

    def audit(ctx: OperationContext) -> None:
        log.info("operation ended", extra=ctx.log_context())

    def broken_hook(ctx: OperationContext) -> None:
        raise RuntimeError("the audit store is down")

    op = Cancelable.with_timeout(0.05, name="nightly-export")
    op.on_cancel(audit).on_cancel(broken_hook)
    try:
        async with op:
            await anyio.sleep(60)
    except TimeoutCancelation as exc:
        print(f"stopped: {exc}")

    for line in lines.getvalue().splitlines():
        record = json.loads(line)
        if record["message"] == "operation ended":
            print(
                f"logged: {record['operation_name']} {record['status']}, "
                f"reason {record['cancel_reason']}"
            )
        else:
            print(f"logged {record['level']}: {record['message']}")
            print(f"  with its traceback: {'the audit store is down' in record['exc_info']}")
    print("Logging example complete.")


if __name__ == "__main__":
    anyio.run(main)

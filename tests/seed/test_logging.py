"""cancelpool.utils.logging.configure_logging, at the seed library's path."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import anyio
import pytest

from cancelpool import Cancelable, ConditionSource
from cancelpool.utils.logging import configure_logging, get_logger


@pytest.fixture
def cancelpool_logger() -> Iterator[logging.Logger]:
    """The cancelpool logger, put back as it was after the test."""
    logger = logging.getLogger("cancelpool")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_plain_lines_at_the_chosen_level(cancelpool_logger: logging.Logger) -> None:
    out = io.StringIO()
    assert configure_logging(log_level="DEBUG", stream=out) is cancelpool_logger
    get_logger().debug("hello %s", "there")
    assert "DEBUG cancelpool: hello there" in out.getvalue()
    configure_logging("WARNING", stream=out)  # replaces, no duplicate handler
    get_logger().info("hidden")
    get_logger().warning("shown")
    assert "hidden" not in out.getvalue()
    assert out.getvalue().count("shown") == 1


@pytest.mark.anyio
async def test_json_lines_carry_extra_fields(cancelpool_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, json_output=True, stream=out)
    async with Cancelable(name="job") as op:
        get_logger().info("working", extra=op.context.log_context())
    # A real record from the library: a condition that raises is logged with its traceback.
    checks: list[int] = []
    done = anyio.Event()

    def flaky() -> bool:
        checks.append(1)
        if len(checks) == 1:
            raise OSError("sensor")
        done.set()
        return False

    async with Cancelable().add_source(ConditionSource(flaky, check_interval=0.001)):
        with anyio.fail_after(60):
            await done.wait()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["message"] == "working"
    assert lines[0]["operation_id"] == op.context.id
    assert lines[0]["status"] == "running"
    assert lines[1]["level"] == "ERROR"
    assert "OSError: sensor" in lines[1]["exc_info"]


def test_bad_level_is_refused(cancelpool_logger: logging.Logger) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD")
    with pytest.raises(ValueError, match="log level"):
        configure_logging(True)

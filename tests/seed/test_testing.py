"""cancelpool.testing: the seed library's helpers for users' own tests."""

# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012

from __future__ import annotations

import subprocess
import sys
import time

import anyio
import pytest

from _handshake import BACKSTOP
from cancelpool import Cancelable, CancelationReason, ManualCancelation, OperationStatus
from cancelpool.testing import (
    MockCancelationToken,
    MockCancellationToken,
    OperationRecorder,
    assert_cancelation_within,
    assert_cancellation_within,
    create_slow_stream,
    run_with_timeout_test,
)

FOREVER = 3600


@pytest.mark.anyio
async def test_mock_token_records_each_cancel_and_cancels_operations() -> None:
    token = MockCancelationToken()
    other = MockCancelationToken()
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="stop"):
        async with Cancelable.with_token(token):
            await token.cancel(CancelationReason.MANUAL, "stop")
            await anyio.sleep(FOREVER)
    token.cancel_sync("again")
    assert token.get_cancel_count() == 2
    assert [e["message"] for e in token.cancel_history] == ["stop", "again"]
    assert other.cancel_history == []  # each token has its own history
    assert MockCancellationToken is MockCancelationToken


@pytest.mark.anyio
async def test_mock_token_schedule_cancel() -> None:
    token = MockCancelationToken()
    with anyio.fail_after(BACKSTOP):
        await token.schedule_cancel(0.01, CancelationReason.TIMEOUT, "later")
        assert not token.is_cancelled
        await token.wait_for_cancel()
    assert token.reason is CancelationReason.TIMEOUT
    with pytest.raises(ValueError, match="delay"):
        await token.schedule_cancel(-1)


@pytest.mark.anyio
async def test_operation_recorder_records_progress_status_and_errors() -> None:
    recorder = OperationRecorder()
    async with recorder.attach_to_cancelable(Cancelable(name="job")) as op:
        await op.report_progress("half way", {"n": 1})
    recorder.assert_final_status(op.context.id, OperationStatus.COMPLETED)
    types = [e["event_type"] for e in recorder.get_events_for_operation(op.context.id)]
    assert types == ["status_running", "progress", "status_completed"]
    progress = recorder.assert_event_occurred(op.context.id, "progress")
    assert progress["data"] == {"message": "half way", "meta": {"n": 1}}

    failing = recorder.attach_to_cancellable(Cancelable(name="bad"))
    with pytest.raises(KeyError):
        async with failing:
            raise KeyError("k")
    [error] = recorder.get_events_by_type("error")
    assert error["data"]["error_type"] == "KeyError"
    recorder.assert_final_status(failing.context.id, OperationStatus.FAILED)
    with pytest.raises(AssertionError, match="expected status completed"):
        recorder.assert_final_status(failing.context.id, OperationStatus.COMPLETED)
    with pytest.raises(AssertionError, match="not found"):
        recorder.assert_event_occurred(op.context.id, "status_cancelled")
    with pytest.raises(AssertionError, match="not recorded"):
        recorder.assert_final_status("nope", OperationStatus.COMPLETED)


@pytest.mark.anyio
async def test_assert_cancelation_within() -> None:
    async with assert_cancelation_within(0, BACKSTOP) as token:
        token.cancel_sync()
    with pytest.raises(AssertionError, match="was not"):
        async with assert_cancelation_within(0, BACKSTOP):
            pass
    with pytest.raises(AssertionError, match="too early"):
        async with assert_cancellation_within(BACKSTOP, BACKSTOP) as token:
            token.cancel_sync()
    with pytest.raises(AssertionError, match="too late"):
        async with assert_cancelation_within(0, 0) as token:
            start = time.monotonic()
            while time.monotonic() == start:  # let the clock move past the start
                pass
            token.cancel_sync()


@pytest.mark.anyio
async def test_create_slow_stream_and_run_with_timeout_test() -> None:
    assert [i async for i in create_slow_stream([1, 2, 3], delay=0)] == [1, 2, 3]
    with pytest.raises(ManualCancelation):
        async with Cancelable() as op:
            async for item in create_slow_stream([1, 2, 3], delay=0, cancelable=op):
                if item == 2:
                    op.cancel_sync()
    # Generous tolerance: a backstop, not a measurement.
    await run_with_timeout_test(_times_out(), 0.01, tolerance=BACKSTOP)
    with pytest.raises(AssertionError, match="completed"):
        await run_with_timeout_test(anyio.sleep(0), 1.0)


async def _times_out() -> None:
    async with Cancelable.with_timeout(0.01):
        await anyio.sleep(FOREVER)


def test_import_cancelpool_does_not_load_testing() -> None:
    code = "import sys, cancelpool\nprint('cancelpool.testing' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"

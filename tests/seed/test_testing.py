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
from cancelpool import (
    Cancelable,
    CancelationReason,
    ManualCancelation,
    OperationStatus,
    TimeoutCancelation,
    current_operation,
)
from cancelpool.testing import (
    CancelationScenario,
    CancellationScenario,
    MockCancelationToken,
    MockCancellationToken,
    OperationRecorder,
    assert_cancelation_within,
    assert_cancellation_within,
    create_slow_stream,
    run_with_timeout_test,
    sample_async_operation,
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


async def _reports_then_waits() -> None:
    op = current_operation()
    assert op is not None
    await op.report_progress("started")
    await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_scenario_cancels_the_operation_and_checks_its_status() -> None:
    scenario = (
        CancelationScenario("stop")
        .add_delay(0)
        .add_cancelation(CancelationReason.CONDITION, "enough")
        .add_status_check(OperationStatus.CANCELLED)
    )
    with anyio.fail_after(BACKSTOP):
        recorder = await scenario.run(_reports_then_waits)
    [ctx] = recorder.operations.values()
    assert ctx.name == "scenario_stop"
    assert ctx.cancel_reason is CancelationReason.CONDITION
    assert ctx.cancel_message == "enough"
    assert [e["event_type"] for e in recorder.get_events_by_type("status_cancelled")] == [
        "status_cancelled"
    ]
    assert [step["type"] for step in scenario.steps] == ["delay", "cancel"]
    assert CancellationScenario is CancelationScenario


@pytest.mark.anyio
async def test_scenario_checks_progress_and_fails_a_check_that_does_not_hold() -> None:
    async def reports(message: str, *, then: str) -> str:
        op = current_operation()
        assert op is not None
        await op.report_progress(message)
        await op.report_progress(then)
        return message

    ok = (
        CancelationScenario("ok")
        .add_progress_check("b")
        .add_status_check(OperationStatus.COMPLETED)
    )
    recorder = await ok.run(reports, "a", then="b")
    assert [e["data"]["message"] for e in recorder.get_events_by_type("progress")] == ["a", "b"]

    with pytest.raises(AssertionError, match=r"'missing' not reported"):
        await CancelationScenario("p").add_progress_check("missing").run(reports, "a", then="b")
    with pytest.raises(AssertionError, match="expected status cancelled, got completed"):
        await (
            CancelationScenario("s")
            .add_status_check(OperationStatus.CANCELLED)
            .run(reports, "a", then="b")
        )


@pytest.mark.anyio
async def test_scenario_lets_other_errors_and_outside_cancellation_through() -> None:
    async def fails() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await CancelationScenario("e").run(fails)
    with anyio.move_on_after(0.01) as scope:
        await CancelationScenario("outside").run(anyio.sleep, FOREVER)
    assert scope.cancelled_caught


def test_scenario_refuses_bad_steps() -> None:
    scenario = CancelationScenario("bad")
    for delay in (-1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="delay"):
            scenario.add_delay(delay)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CancelationReason"):
        scenario.add_cancelation("manual")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="OperationStatus"):
        scenario.add_status_check("completed")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="string"):
        CancelationScenario(3)  # type: ignore[arg-type]
    assert scenario.steps == []
    assert scenario.assertions == []


@pytest.mark.anyio
async def test_sample_async_operation_and_record_event() -> None:
    recorder = OperationRecorder()
    async with recorder.attach_to_cancelable(Cancelable(name="sample")) as op:
        assert await sample_async_operation(0, op) == "success"
    messages = [e["data"]["message"] for e in recorder.get_events_by_type("progress")]
    assert messages == ["Operation started", "Operation 50% complete", "Operation completed"]
    await recorder.record_event("x", "custom", {"k": 1})
    [event] = recorder.get_events_for_operation("x")
    assert (event["event_type"], event["data"]) == ("custom", {"k": 1})
    with anyio.fail_after(BACKSTOP), pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0.01):
            await sample_async_operation(FOREVER)
    with pytest.raises(ValueError, match="duration"):
        await sample_async_operation(-1)


def test_import_cancelpool_does_not_load_testing() -> None:
    code = "import sys, cancelpool\nprint('cancelpool.testing' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"

# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012
"""Cancellation sources: timeout, signal, condition, resource thresholds, any-of, all-of.

Every composite is tested with real member sources (timers and conditions that run),
nested in each other. Tasks are ordered with events; ``BACKSTOP`` only guards against a
hang.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cancelpool import (
    AllOfSource,
    AnyOfSource,
    Cancelable,
    CancelationReason,
    CancelationSource,
    CompositeSource,
    ConditionCancelation,
    ConditionSource,
    ManualCancelation,
    ResourceConditionSource,
    SignalCancelation,
    SignalSource,
    TimeoutCancelation,
    TimeoutSource,
)

# Generous bound on anything that should be prompt: a guard against a hang.
BACKSTOP = 5.0
FOREVER = 100
# Condition checks in these tests poll fast so that the tests are quick.
FAST = 0.001


class Flag:
    """A condition whose value the test sets."""

    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


async def fired(source: CancelationSource) -> None:
    """Wait until ``source`` fires (a handshake, not a sleep)."""
    event = anyio.Event()
    source.add_listener(lambda _: event.set())
    with anyio.fail_after(BACKSTOP):
        await event.wait()


# ----------------------------------------------------------------------- timeout


def test_alias() -> None:
    assert AnyOfSource is CompositeSource


@pytest.mark.anyio
async def test_timeout_source_added_directly_is_the_deadline() -> None:
    op = Cancelable(name="t").add_source(TimeoutSource(0.01))
    with pytest.raises(TimeoutCancelation):
        async with op:
            await anyio.sleep(FOREVER)
    assert op.context.cancel_reason is CancelationReason.TIMEOUT


@pytest.mark.anyio
async def test_earliest_of_several_timeouts_wins() -> None:
    op = Cancelable().add_source(TimeoutSource(FOREVER)).add_source(TimeoutSource(0.01))
    with anyio.fail_after(BACKSTOP), pytest.raises(TimeoutCancelation):
        async with op:
            await anyio.sleep(FOREVER)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf])
def test_timeout_source_rejects_bad_values(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds"):
        TimeoutSource(bad)


@given(st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), st.just(math.inf)))
def test_timeout_source_rejects_every_bad_float(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        TimeoutSource(bad)


# ------------------------------------------------------------------ signal source


@pytest.mark.anyio
async def test_signal_source_fires_on_signal() -> None:
    source = SignalSource(signal.SIGUSR1)
    with anyio.fail_after(BACKSTOP), pytest.raises(SignalCancelation, match="SIGUSR1"):
        async with Cancelable(name="svc").add_source(source):
            await anyio.wait_all_tasks_blocked()  # the monitor now listens
            os.kill(os.getpid(), signal.SIGUSR1)
            await anyio.sleep(FOREVER)
    assert source.triggered


@pytest.mark.anyio
async def test_signal_in_any_of_with_timeout() -> None:
    source = AnyOfSource([TimeoutSource(FOREVER), SignalSource(signal.SIGUSR2)])
    with anyio.fail_after(BACKSTOP), pytest.raises(SignalCancelation):
        async with Cancelable().add_source(source):
            await anyio.wait_all_tasks_blocked()
            os.kill(os.getpid(), signal.SIGUSR2)
            await anyio.sleep(FOREVER)


def test_signal_source_validates() -> None:
    with pytest.raises(ValueError, match="not a signal of this platform"):
        SignalSource(99999)
    with pytest.raises(ValueError, match="cannot be caught"):
        SignalSource(signal.SIGKILL)
    assert SignalSource().signals == (signal.SIGINT, signal.SIGTERM)


# --------------------------------------------------------------- condition source


@pytest.mark.anyio
async def test_condition_source_fires_when_true() -> None:
    flag = Flag()
    source = ConditionSource(flag, check_interval=FAST, condition_name="flag")
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation) as info:
        async with Cancelable().add_source(source):
            flag.value = True
            await anyio.sleep(FOREVER)
    assert "'flag'" in info.value.message


@pytest.mark.anyio
async def test_condition_in_thread_does_not_block_loop() -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow_check() -> bool:
        entered.set()
        release.wait(BACKSTOP)
        return True

    source = ConditionSource(slow_check, check_interval=FAST, run_in_thread=True)
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation):
        async with Cancelable().add_source(source) as op:
            await anyio.to_thread.run_sync(entered.wait, BACKSTOP)
            await _loop_is_responsive()
            assert not op.is_cancelled
            release.set()
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_raising_condition_is_logged_and_checked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As the seed library: a check that raises neither fires nor stops the operation.
    checks: list[int] = []

    def flaky() -> bool:
        checks.append(1)
        if len(checks) <= 3:
            raise OSError("sensor unplugged")
        return True

    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation) as info:
        async with Cancelable().add_source(ConditionSource(flaky, check_interval=FAST)) as op:
            await anyio.sleep(FOREVER)
    assert len(checks) == 4
    assert info.value.reason is CancelationReason.CONDITION
    assert op.context.cancel_reason is CancelationReason.CONDITION
    raised = [r for r in caplog.records if "raised; checking it again" in r.getMessage()]
    assert len(raised) == 3


def test_condition_source_validates() -> None:
    with pytest.raises(TypeError, match="condition must be callable"):
        ConditionSource(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="check_interval"):
        ConditionSource(Flag(), check_interval=0)
    with pytest.raises(ValueError, match="check_interval"):
        ConditionSource(Flag(), check_interval=-0.5)


# ----------------------------------------------------------- resource thresholds


async def _loop_is_responsive() -> None:
    """Prove the event loop runs other tasks: a two-task ping-pong completes."""
    ping, pong = anyio.Event(), anyio.Event()

    async def other() -> None:
        await ping.wait()
        pong.set()

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            ping.set()
            await pong.wait()


@pytest.mark.anyio
async def test_resource_check_never_blocks_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    entered = threading.Event()
    release = threading.Event()

    def blocking_virtual_memory() -> Any:
        entered.set()
        release.wait(BACKSTOP)  # a psutil call that hangs (e.g. a stuck /proc read)
        return SimpleNamespace(percent=99.0)

    monkeypatch.setattr(psutil, "virtual_memory", blocking_virtual_memory)
    source = ResourceConditionSource(memory_threshold=90, check_interval=FAST)
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation, match="memory"):
        async with Cancelable(name="mem").add_source(source) as op:
            await anyio.to_thread.run_sync(entered.wait, BACKSTOP)
            # The check is stuck in its thread; the loop keeps serving other tasks.
            await _loop_is_responsive()
            assert not op.is_cancelled
            release.set()
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_operation_ends_without_waiting_for_a_stuck_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered = threading.Event()
    release = threading.Event()

    def blocking_virtual_memory() -> Any:
        entered.set()
        release.wait(BACKSTOP)
        return SimpleNamespace(percent=1.0)

    monkeypatch.setattr(psutil, "virtual_memory", blocking_virtual_memory)
    try:
        with anyio.fail_after(BACKSTOP):
            async with Cancelable().add_source(
                ResourceConditionSource(memory_threshold=90, check_interval=FAST)
            ):
                await anyio.to_thread.run_sync(entered.wait, BACKSTOP)
        # Left while the check was still stuck in its thread.
        assert not release.is_set()
    finally:
        release.set()


@pytest.mark.anyio
async def test_memory_threshold_crossed(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([40.0, 60.0, 85.0, 95.0])
    last = {"value": 0.0}

    def fake_virtual_memory() -> Any:
        last["value"] = next(readings, 95.0)
        return SimpleNamespace(percent=last["value"])

    monkeypatch.setattr(psutil, "virtual_memory", fake_virtual_memory)
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation) as info:
        async with Cancelable().add_source(
            ResourceConditionSource(memory_threshold=90, check_interval=FAST)
        ):
            await anyio.sleep(FOREVER)
    assert last["value"] == 95.0
    assert "memory at 95.0% >= 90%" in info.value.message


@pytest.mark.anyio
async def test_cpu_threshold_needs_two_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def fake_cpu_percent(interval: float | None = None) -> float:
        assert interval is None  # never sleeps in the check
        calls.append(99.0)
        return 99.0

    monkeypatch.setattr(psutil, "cpu_percent", fake_cpu_percent)
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation, match="CPU"):
        async with Cancelable().add_source(
            ResourceConditionSource(cpu_threshold=80, check_interval=FAST)
        ):
            await anyio.sleep(FOREVER)
    # The first reading only primes psutil's counter (it means "since boot").
    assert len(calls) == 2


@pytest.mark.anyio
async def test_disk_threshold_crossed(monkeypatch: pytest.MonkeyPatch) -> None:
    paths: list[str] = []

    def fake_disk_usage(path: str) -> Any:
        paths.append(path)
        return SimpleNamespace(percent=97.5)

    monkeypatch.setattr(psutil, "disk_usage", fake_disk_usage)
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation, match="disk /tmp"):
        async with Cancelable().add_source(
            ResourceConditionSource(disk_threshold=95, check_interval=FAST, disk_path="/tmp")
        ):
            await anyio.sleep(FOREVER)
    assert paths[0] == "/tmp"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_threshold": 101},
        {"memory_threshold": -1},
        {"cpu_threshold": 150.0},
        {"disk_threshold": math.nan},
        {"memory_threshold": True},
        {"cpu_threshold": "90"},
    ],
)
def test_thresholds_outside_0_100_fail_at_call_site(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="percentage between 0 and 100"):
        ResourceConditionSource(**kwargs)


def test_resource_source_needs_a_threshold() -> None:
    with pytest.raises(ValueError, match="at least one of"):
        ResourceConditionSource()


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_threshold_validation_property(value: float) -> None:
    if 0 <= value <= 100:
        assert ResourceConditionSource(memory_threshold=value).memory_threshold == value
    else:
        with pytest.raises(ValueError, match="memory_threshold"):
            ResourceConditionSource(memory_threshold=value)


# -------------------------------------------------------------------- composites


@pytest.mark.anyio
async def test_all_of_fires_only_after_every_member_timeout_first() -> None:
    timer = TimeoutSource(0.005)
    flag = Flag()
    condition = ConditionSource(flag, check_interval=FAST, condition_name="target reached")
    all_of = AllOfSource([timer, condition])
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation) as info:
        async with Cancelable(name="batch").add_source(all_of) as op:
            await fired(timer)
            # The timer alone is not enough: give the monitors a full round.
            await anyio.wait_all_tasks_blocked()
            assert not all_of.triggered
            assert not op.is_cancelled
            flag.value = True
            await anyio.sleep(FOREVER)
    assert all_of.triggered
    assert condition.triggered
    assert info.value.reason is CancelationReason.CONDITION
    assert "all 2 sources" in info.value.message


@pytest.mark.anyio
async def test_all_of_fires_only_after_every_member_condition_first() -> None:
    # Long enough that the condition (true from the start) surely fires first.
    timer = TimeoutSource(0.2)
    flag = Flag()
    flag.value = True
    condition = ConditionSource(flag, check_interval=FAST)
    all_of = AllOfSource([condition, timer])
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation):
        async with Cancelable().add_source(all_of):
            await fired(condition)
            assert not timer.triggered
            assert not all_of.triggered
            await anyio.sleep(FOREVER)
    assert timer.triggered


@pytest.mark.anyio
async def test_all_of_never_fires_if_one_member_never_does() -> None:
    all_of = AllOfSource([TimeoutSource(0), ConditionSource(Flag(), check_interval=FAST)])
    timer = all_of.sources[0]
    async with Cancelable().add_source(all_of) as op:
        await fired(timer)
        await anyio.wait_all_tasks_blocked()
    assert not all_of.triggered
    assert op.context.cancel_reason is None


@pytest.mark.anyio
async def test_any_of_fires_on_first_member() -> None:
    flag = Flag()
    slow_timer = TimeoutSource(FOREVER)
    condition = ConditionSource(flag, check_interval=FAST, condition_name="quota")
    any_of = AnyOfSource([slow_timer, condition])
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation) as info:
        async with Cancelable().add_source(any_of):
            flag.value = True
            await anyio.sleep(FOREVER)
    assert any_of.triggered
    assert not slow_timer.triggered
    assert "quota" in info.value.message


@pytest.mark.anyio
async def test_any_of_with_timer_first_raises_timeout() -> None:
    any_of = AnyOfSource([TimeoutSource(0.01), ConditionSource(Flag(), check_interval=FAST)])
    with anyio.fail_after(BACKSTOP), pytest.raises(TimeoutCancelation) as info:
        async with Cancelable().add_source(any_of) as op:
            await anyio.sleep(FOREVER)
    assert info.value.reason is CancelationReason.TIMEOUT
    assert op.context.cancel_reason is CancelationReason.TIMEOUT


@pytest.mark.anyio
async def test_nested_composites_or_of_and() -> None:
    # (hard timeout OR manual) OR (minimum time AND target reached)
    manual = CancelationSource(name="stop button")
    safety_net = AnyOfSource([TimeoutSource(FOREVER), manual])
    target = Flag()
    min_time = TimeoutSource(0.005)
    requirements = AllOfSource([min_time, ConditionSource(target, check_interval=FAST)])
    final = AnyOfSource([safety_net, requirements])
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation):
        async with Cancelable().add_source(final) as op:
            await fired(min_time)
            await anyio.wait_all_tasks_blocked()
            assert not op.is_cancelled
            target.value = True
            await anyio.sleep(FOREVER)
    assert requirements.triggered
    assert not safety_net.triggered


@pytest.mark.anyio
async def test_nested_composites_manual_member() -> None:
    manual = CancelationSource(name="stop button")
    final = AnyOfSource(
        [
            AnyOfSource([TimeoutSource(FOREVER), manual]),
            AllOfSource([TimeoutSource(FOREVER), ConditionSource(Flag(), check_interval=1)]),
        ]
    )
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="stop button"):
        async with Cancelable().add_source(final):
            await manual.trigger_cancelation("pressed")
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_all_of_of_all_of() -> None:
    a, b, c = Flag(), Flag(), Flag()
    inner = AllOfSource([ConditionSource(a, FAST), ConditionSource(b, FAST)])
    outer = AllOfSource([inner, ConditionSource(c, FAST)])
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation):
        async with Cancelable().add_source(outer) as op:
            a.value = True
            c.value = True
            await fired(outer.sources[1])
            await anyio.wait_all_tasks_blocked()
            assert not op.is_cancelled
            b.value = True
            await anyio.sleep(FOREVER)


def test_composites_validate() -> None:
    with pytest.raises(ValueError, match="at least one source"):
        AnyOfSource([])
    with pytest.raises(ValueError, match="at least one source"):
        AllOfSource([])
    with pytest.raises(TypeError, match="not a CancelationSource"):
        AllOfSource([TimeoutSource(1), "timeout"])  # type: ignore[list-item]


@pytest.mark.anyio
async def test_manual_source_trigger() -> None:
    source = CancelationSource(name="button")
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="clicked"):
        async with Cancelable().add_source(source):
            await source.trigger_cancelation("clicked")
            await anyio.sleep(FOREVER)
    assert "fired" in repr(source)

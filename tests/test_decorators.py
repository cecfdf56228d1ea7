"""The decorators: one operation per call, a lent operation, parameter injection."""

from __future__ import annotations

import inspect
import os
import signal
from datetime import timedelta
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from cancelpool import (
    AnyOfSource,
    Cancelable,
    CancelationError,
    CancelationReason,
    CancelationToken,
    ConditionCancelation,
    ConditionSource,
    ManualCancelation,
    OperationRegistry,
    OperationStatus,
    SignalCancelation,
    TimeoutCancelation,
    TimeoutSource,
    cancelable,
    cancelable_combine,
    cancelable_method,
    cancelable_with_condition,
    cancelable_with_signal,
    cancelable_with_token,
    current_operation,
    with_cancelable,
    with_current_operation,
)

# Deadlines that must fire in a test are short; bodies that must be interrupted wait
# forever, so the outcome never depends on how fast the machine is.
SHORT = 0.02
# A deadline that must NOT fire: only a hung test could reach it.
LONG = 60.0


# -- @cancelable ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_cancelable_runs_the_call_in_a_new_operation() -> None:
    seen: list[Cancelable] = []

    @cancelable(timeout=LONG)
    async def work(x: int, cancelable: Cancelable) -> int:
        seen.append(cancelable)
        assert current_operation() is cancelable
        assert cancelable.context.status is OperationStatus.RUNNING
        return x * 2

    assert await work(21) == 42
    assert await work(1) == 2
    first, second = seen
    assert first is not second
    assert first.context.name == "work"
    assert first.context.status is OperationStatus.COMPLETED
    assert current_operation() is None


@pytest.mark.anyio
async def test_cancelable_timeout_raises_timeout_cancelation_with_partial_result() -> None:
    @cancelable(timeout=SHORT, name="slow")
    async def slow(cancelable: Cancelable) -> None:
        cancelable.context.partial_result = ["first half"]
        await anyio.sleep_forever()

    with pytest.raises(TimeoutCancelation) as info:
        await slow()
    assert isinstance(info.value, TimeoutError)
    assert info.value.reason is CancelationReason.TIMEOUT
    assert info.value.partial_result == ["first half"]
    assert info.value.context is not None
    assert info.value.context.name == "slow"
    assert info.value.context.status is OperationStatus.CANCELLED


@pytest.mark.anyio
async def test_cancelable_accepts_a_timedelta() -> None:
    @cancelable(timeout=timedelta(seconds=SHORT))
    async def work() -> None:
        await anyio.sleep_forever()

    with pytest.raises(TimeoutCancelation):
        await work()


@pytest.mark.anyio
async def test_cancelable_without_parentheses() -> None:
    @cancelable
    async def work(cancelable: Cancelable) -> str | None:
        return cancelable.context.name

    assert await work() == "work"


@pytest.mark.anyio
async def test_outside_cancellation_propagates_untouched() -> None:
    inner: list[Cancelable] = []

    @cancelable(timeout=LONG)
    async def work(cancelable: Cancelable) -> None:
        inner.append(cancelable)
        outer.cancel()
        await anyio.sleep_forever()

    with anyio.CancelScope() as outer:
        await work()
        pytest.fail("the enclosing scope's cancellation did not reach the call")
    assert outer.cancelled_caught
    assert inner[0].context.status is OperationStatus.CANCELLED


@pytest.mark.anyio
async def test_parent_operation_cancellation_reaches_the_decorated_call() -> None:
    token = CancelationToken()

    @cancelable(timeout=LONG, name="child")
    async def child(cancelable: Cancelable) -> None:
        await token.cancel("stop everything")
        await anyio.sleep_forever()

    with pytest.raises(ManualCancelation) as info:
        async with Cancelable.with_token(token, name="parent") as parent:
            await child()
    assert info.value.context is parent.context


@pytest.mark.anyio
async def test_register_false_keeps_the_operation_out_of_the_registry() -> None:
    registry = OperationRegistry.get_instance()

    @cancelable(register=False)
    async def hidden(cancelable: Cancelable) -> object:
        return await registry.get_operation(cancelable.context.id)

    @cancelable(register=True)
    async def listed(cancelable: Cancelable) -> object:
        return await registry.get_operation(cancelable.context.id)

    assert await hidden() is None
    assert isinstance(await listed(), Cancelable)


# -- injection -----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_inject_param_none_leaves_the_signature_alone() -> None:
    @cancelable(timeout=LONG, inject_param=None)
    async def work(cancelable: str = "mine") -> tuple[str, bool]:
        return cancelable, current_operation() is not None

    assert await work() == ("mine", True)
    assert await work("given") == ("given", True)


@pytest.mark.anyio
async def test_custom_inject_param_and_kwargs() -> None:
    @cancelable(inject_param="cancel")
    async def named(x: int, cancel: Cancelable | None = None) -> bool:
        return cancel is current_operation() and cancel is not None

    @cancelable()
    async def catch_all(**kwargs: Any) -> Any:
        return kwargs

    assert await named(1)
    received = await catch_all(a=1)
    assert received["a"] == 1
    assert isinstance(received["cancelable"], Cancelable)


@pytest.mark.anyio
async def test_no_matching_parameter_means_no_injection() -> None:
    @cancelable()
    async def plain(x: int) -> int:
        assert current_operation() is not None
        return x

    assert await plain(3) == 3


@pytest.mark.anyio
async def test_injection_is_planned_once_at_decoration(monkeypatch: pytest.MonkeyPatch) -> None:
    @cancelable()
    async def work(x: int, cancelable: Cancelable) -> int:
        return x

    def no_signature(*args: object, **kwargs: object) -> None:
        raise AssertionError("inspect.signature() called at call time")

    monkeypatch.setattr(inspect, "signature", no_signature)
    assert await work(5) == 5


@pytest.mark.anyio
async def test_passing_the_injected_parameter_is_refused() -> None:
    @cancelable()
    async def work(x: int, cancelable: Cancelable) -> int:
        return x

    with pytest.raises(TypeError, match="supplies itself"):
        await work(1, Cancelable())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="supplies itself"):
        await work(1, cancelable=Cancelable())  # type: ignore[call-arg]


def test_the_wrapper_keeps_the_function_metadata_and_hides_the_injected_parameter() -> None:
    async def fetch(url: str, *, retries: int = 3, cancelable: Cancelable) -> str:
        """Fetch a URL."""
        return url

    wrapped = cancelable(timeout=1)(fetch)
    assert wrapped.__name__ == "fetch"
    assert wrapped.__doc__ == "Fetch a URL."
    assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(wrapped)
    assert list(inspect.signature(wrapped).parameters) == ["url", "retries"]


def test_positional_only_injected_parameter_is_refused_at_decoration() -> None:
    async def work(cancelable: Cancelable, /) -> None: ...

    with pytest.raises(TypeError, match="cannot be given by keyword"):
        cancelable()(work)


@pytest.mark.parametrize(
    "decorate",
    [
        pytest.param(lambda: cancelable(), id="cancelable"),
        pytest.param(lambda: cancelable_method(), id="cancelable_method"),
        pytest.param(lambda: cancelable_with_token(CancelationToken()), id="with_token"),
        pytest.param(lambda: cancelable_with_signal(signal.SIGINT), id="with_signal"),
        pytest.param(lambda: cancelable_with_condition(lambda: False), id="with_condition"),
        pytest.param(lambda: cancelable_combine(Cancelable.with_timeout(1)), id="combine"),
        pytest.param(lambda: with_cancelable(Cancelable()), id="with_cancelable"),
    ],
)
def test_sync_functions_and_async_generators_are_refused_at_decoration(decorate: Any) -> None:
    def sync(x: int) -> int:
        return x

    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="needs an async function"):
        decorate()(sync)
    with pytest.raises(TypeError, match="async generator"):
        decorate()(agen)


@pytest.mark.anyio
async def test_an_object_with_async_call_is_accepted() -> None:
    class Job:
        async def __call__(self, x: int) -> int:
            return x + 1

    assert await cancelable()(Job())(1) == 2


def test_bad_arguments_fail_at_decoration() -> None:
    with pytest.raises(ValueError, match="timeout"):
        cancelable(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        cancelable(timeout="soon")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="name"):
        cancelable(name=42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="inject_param"):
        cancelable(inject_param="not a name")(_noop)
    with pytest.raises(TypeError, match="CancelationToken"):
        cancelable_with_token("token")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="signal"):
        cancelable_with_signal()
    with pytest.raises(ValueError, match="not a signal"):
        cancelable_with_signal(10_000)
    with pytest.raises(TypeError, match="callable"):
        cancelable_with_condition(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="check_interval"):
        cancelable_with_condition(lambda: False, check_interval=0)
    with pytest.raises(TypeError, match="Cancelable"):
        with_cancelable("op")  # type: ignore[arg-type]


async def _noop(cancelable: Cancelable) -> None:
    pass


# -- @cancelable_with_token / _signal / _condition -----------------------------------------
@pytest.mark.anyio
async def test_token_cancelled_from_a_thread_cancels_the_call() -> None:
    token = CancelationToken()
    started = anyio.Event()

    @cancelable_with_token(token, name="worker")
    async def worker(cancelable: Cancelable) -> None:
        started.set()
        await anyio.sleep_forever()

    async def cancel_from_thread() -> None:
        await started.wait()
        await anyio.to_thread.run_sync(token.cancel_sync, "user pressed stop")

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_from_thread)
        with pytest.raises(ManualCancelation, match="user pressed stop") as info:
            await worker()
    assert info.value.context is not None
    assert info.value.context.name == "worker"


@pytest.mark.anyio
async def test_a_cancelled_token_cancels_every_later_call() -> None:
    token = CancelationToken()
    token.cancel_sync(CancelationReason.CONDITION, "quota exhausted")

    @cancelable_with_token(token)
    async def worker() -> None:
        await anyio.sleep_forever()

    for _ in range(2):
        with pytest.raises(ConditionCancelation, match="quota exhausted"):
            await worker()


@pytest.mark.anyio
async def test_signal_cancels_the_call() -> None:
    # SIGWINCH is ignored by default: if the handler were missing, the test would
    # hang until its timeout instead of killing the test process.
    @cancelable_with_signal(signal.SIGWINCH, name="service")
    async def service(cancelable: Cancelable) -> None:
        await anyio.wait_all_tasks_blocked()  # the signal receiver is installed
        os.kill(os.getpid(), signal.SIGWINCH)
        await anyio.sleep_forever()

    with pytest.raises(SignalCancelation, match="SIGWINCH"):
        await service()


@pytest.mark.anyio
async def test_condition_cancels_the_call_and_every_call_checks_afresh() -> None:
    state = {"stop": False}

    @cancelable_with_condition(lambda: state["stop"], check_interval=0.005, condition_name="stop")
    async def work(finish: bool) -> str:
        if finish:
            return "finished"
        state["stop"] = True
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with pytest.raises(ConditionCancelation, match="stop"):
        await work(False)
    state["stop"] = False
    assert await work(True) == "finished"


# -- @cancelable_combine -------------------------------------------------------------------
@pytest.mark.anyio
async def test_combine_enforces_a_combined_timeout() -> None:
    token = CancelationToken()

    @cancelable_combine(Cancelable.with_token(token), Cancelable.with_timeout(SHORT))
    async def work(cancelable: Cancelable) -> None:
        await anyio.sleep_forever()

    with pytest.raises(TimeoutCancelation):
        await work()
    assert not token.is_cancelled


@pytest.mark.anyio
async def test_combine_enforces_a_combined_token() -> None:
    token = CancelationToken()
    started = anyio.Event()

    @cancelable_combine(Cancelable.with_timeout(LONG), Cancelable.with_token(token), name="robust")
    async def work(cancelable: Cancelable) -> None:
        assert cancelable.context.name == "robust"
        started.set()
        await anyio.sleep_forever()

    async def cancel_later() -> None:
        await started.wait()
        token.cancel_sync("operator stop")

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_later)
        with pytest.raises(ManualCancelation, match="operator stop"):
            await work()


@pytest.mark.anyio
async def test_combine_enforces_conditions_afresh_on_every_call() -> None:
    state = {"stop": False}
    template = Cancelable.with_condition(lambda: state["stop"], check_interval=0.005)
    composite = Cancelable(name="composite").add_source(
        AnyOfSource([ConditionSource(lambda: state["stop"], 0.005), TimeoutSource(LONG)])
    )

    @cancelable_combine(template, composite)
    async def work(stop: bool) -> str:
        if not stop:
            return "done"
        state["stop"] = True
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with pytest.raises(ConditionCancelation):
        await work(True)
    state["stop"] = False
    # The sources that fired in the first call are copies: the next call is not
    # cancelled at once, and the templates never ran at all.
    assert await work(False) == "done"
    assert template.context.status is OperationStatus.PENDING
    assert composite.context.status is OperationStatus.PENDING


@pytest.mark.anyio
async def test_combine_takes_the_earliest_timeout_and_no_observers() -> None:
    # The same rule as Cancelable.combine: what cancels is taken, what observes is not.
    reports: list[str] = []
    first = Cancelable.with_timeout(LONG, name="first", metadata={"user": 42})
    first.on_progress(lambda op_id, message, meta: reports.append(message))
    first.on_cancel(lambda ctx: reports.append("hook"))
    second = Cancelable.with_timeout(SHORT)

    @cancelable_combine(first, second)
    async def work(cancelable: Cancelable) -> None:
        assert cancelable.context.name == "work"  # the function's name, as the seed
        assert cancelable.context.metadata == {
            "sources": [first.operation_id, second.operation_id],
            "combined": True,
        }
        assert cancelable.timeout == SHORT
        await cancelable.report_progress("halfway")
        await anyio.sleep_forever()

    with pytest.raises(TimeoutCancelation):
        await work()
    assert reports == []


def test_combine_refuses_bad_templates() -> None:
    with pytest.raises(TypeError, match="at least one"):
        cancelable_combine()
    with pytest.raises(TypeError, match="Cancelable objects"):
        cancelable_combine(CancelationToken())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_combine_refuses_a_started_template() -> None:
    async with Cancelable() as op:
        with pytest.raises(ValueError, match="already been entered"):
            cancelable_combine(op)


# -- @cancelable_method --------------------------------------------------------------------
class Processor:
    @cancelable_method(timeout=LONG)
    async def process(self, data: str, cancelable: Cancelable) -> tuple[str, str | None]:
        return data, cancelable.context.name

    @cancelable_method(timeout=SHORT)
    async def stuck(self) -> None:
        await anyio.sleep_forever()

    @classmethod
    @cancelable_method()
    async def build(cls, cancelable: Cancelable) -> str | None:
        return cancelable.context.name

    @cancelable_method()
    @classmethod
    async def build_outer(cls, cancelable: Cancelable) -> str | None:
        return cancelable.context.name

    @cancelable_method
    @staticmethod
    async def helper(cancelable: Cancelable) -> str | None:
        return cancelable.context.name

    @cancelable_method(name="custom")
    async def named(self, cancelable: Cancelable) -> str | None:
        return cancelable.context.name


class FastProcessor(Processor):
    pass


@pytest.mark.anyio
async def test_cancelable_method_names_the_operation_after_the_class() -> None:
    processor = Processor()
    assert await processor.process("x") == ("x", "Processor.process")
    assert await FastProcessor().process("y") == ("y", "FastProcessor.process")
    assert await Processor.build() == "Processor.build"
    assert await FastProcessor.build_outer() == "FastProcessor.build_outer"
    assert await Processor.helper() == "Processor.helper"
    assert await processor.named() == "custom"


@pytest.mark.anyio
async def test_cancelable_method_timeout() -> None:
    with pytest.raises(TimeoutCancelation) as info:
        await Processor().stuck()
    assert info.value.context is not None
    assert info.value.context.name == "Processor.stuck"


# -- @with_cancelable ----------------------------------------------------------------------
@pytest.mark.anyio
async def test_with_cancelable_lends_the_operation_without_entering_it() -> None:
    batch = Cancelable.with_timeout(LONG, name="batch")

    @with_cancelable(batch)
    async def step(item: str) -> str:
        op = current_operation()
        assert op is batch
        await op.report_progress(item)
        return item

    @with_cancelable(batch, inject=True)
    async def injected(cancelable: Cancelable) -> Cancelable:
        return cancelable

    with pytest.raises(RuntimeError, match="not running"):
        await step("early")
    async with batch:
        inner = Cancelable(name="inner")
        async with inner:
            assert await step("a") == "a"
            assert current_operation() is inner
        assert await injected() is batch
    assert batch.context.status is OperationStatus.COMPLETED
    with pytest.raises(RuntimeError, match="not running"):
        await step("late")


@pytest.mark.anyio
async def test_with_cancelable_calls_share_one_budget() -> None:
    batch = Cancelable.with_timeout(SHORT, name="batch")
    calls: list[str] = []

    @with_cancelable(batch)
    async def step(item: str) -> None:
        calls.append(item)
        if item == "b":
            await anyio.sleep_forever()

    async def run_batch() -> None:
        async with batch:
            for item in "abc":
                await step(item)

    with pytest.raises(TimeoutCancelation) as info:
        await run_batch()
    # "b" waits forever, so the one budget ends the batch there at the latest (sooner
    # only if the machine stalled for SHORT seconds first): "c" never runs.
    assert calls == ["a", "b"][: len(calls)]
    assert info.value.context is batch.context


@pytest.mark.anyio
async def test_with_cancelable_call_after_cancel_unwinds_to_the_operation() -> None:
    op = Cancelable(name="op")
    ran: list[str] = []

    @with_cancelable(op)
    async def step() -> None:
        ran.append("step")

    async def run() -> None:
        async with op:
            op.cancel_sync(message="enough")
            await step()

    with pytest.raises(ManualCancelation):
        await run()
    assert ran == []


@pytest.mark.anyio
async def test_with_cancelable_refuses_to_run_unprotected_when_cancelled() -> None:
    op = Cancelable(name="op")
    ran: list[str] = []
    outcome: list[BaseException] = []
    attempted = anyio.Event()

    @with_cancelable(op)
    async def step() -> None:
        ran.append("step")

    async def outsider() -> None:
        # A task of an outer task group: the operation's scope does not cover it.
        try:
            await step()
        except CancelationError as exc:
            outcome.append(exc)
        attempted.set()

    async def run(tg: anyio.abc.TaskGroup) -> None:
        async with op:
            with anyio.CancelScope(shield=True):
                op.cancel_sync(message="stop now")
                tg.start_soon(outsider)
                await attempted.wait()
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        with pytest.raises(ManualCancelation):
            await run(tg)
    assert ran == []
    assert isinstance(outcome[0], ManualCancelation)


@pytest.mark.anyio
async def test_with_cancelable_inject_without_the_parameter_does_not_inject() -> None:
    # As the seed library: nothing is injected, the function still runs in the operation.
    op = Cancelable()

    async def step() -> Cancelable | None:
        return current_operation()

    wrapped = with_cancelable(op, inject=True)(step)
    async with op:
        assert await wrapped() is op


# -- @with_current_operation ---------------------------------------------------------------
@pytest.mark.anyio
async def test_with_current_operation_injects_the_current_operation_or_none() -> None:
    @with_current_operation()
    async def helper(data: str, operation: Cancelable | None = None) -> Cancelable | None:
        return operation

    @with_current_operation
    def sync_helper(operation: Cancelable | None = None) -> Cancelable | None:
        return operation

    @with_current_operation(inject_param="op")
    async def kw_helper(**kwargs: Any) -> Any:
        return kwargs["op"]

    assert await helper("x") is None
    assert sync_helper() is None
    async with Cancelable(name="outer") as outer:
        assert await helper("x") is outer
        assert sync_helper() is outer
        assert await kw_helper() is outer
        other = Cancelable()
        assert await helper("x", operation=other) is other
        assert await helper("x", other) is other
    assert list(inspect.signature(helper).parameters) == ["data"]


def test_with_current_operation_without_the_parameter_does_not_inject() -> None:
    # As the seed library: a function with nowhere to put the operation is unchanged.
    async def helper(data: str) -> str:
        return data

    assert with_current_operation()(helper) is helper
    assert with_current_operation(inject_param="op")(helper) is helper

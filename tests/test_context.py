# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012
"""``OperationContext``, the enums and the exceptions: state that outlives the operation
and crosses process boundaries (so it must pickle, under its public module name)."""

from __future__ import annotations

import pickle
import uuid

import anyio
import pytest

import cancelpool
from cancelpool import (
    Cancelable,
    CancelationError,
    CancelationReason,
    ConditionCancelation,
    ManualCancelation,
    OperationContext,
    OperationStatus,
    ParentCancelation,
    SignalCancelation,
    TimeoutCancelation,
)

FOREVER = 100


def test_fresh_context() -> None:
    ctx = OperationContext(name="job", metadata={"k": 1})
    assert ctx.status is OperationStatus.PENDING
    assert ctx.start_time is not None  # set at creation, as in the seed library
    assert ctx.end_time is None
    assert ctx.elapsed_time is None
    assert ctx.duration is None
    assert ctx.cancel_reason is None
    assert ctx.partial_result is None
    assert ctx.parent_id is None
    assert ctx.error is None
    assert not ctx.is_terminal
    uuid.UUID(ctx.id)  # a UUID string, made on first use and then stable
    assert ctx.id == ctx.id
    assert OperationContext(id="fixed").id == "fixed"


@pytest.mark.anyio
async def test_context_of_cancelled_operation_pickles() -> None:
    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0.01, name="job", metadata={"user": 42}) as op:
            op.context.partial_result = {"rows": [1, 2, 3]}
            await anyio.sleep(FOREVER)
    copy = pickle.loads(pickle.dumps(op.context))
    assert type(copy) is OperationContext
    for attr in (
        "id",
        "name",
        "status",
        "start_time",
        "end_time",
        "cancel_reason",
        "cancel_message",
        "partial_result",
        "metadata",
        "parent_id",
    ):
        assert getattr(copy, attr) == getattr(op.context, attr), attr
    assert copy.elapsed_time == op.context.elapsed_time
    assert copy.is_terminal


@pytest.mark.anyio
async def test_context_of_failed_operation_pickles_with_error() -> None:
    with pytest.raises(ValueError, match="bad row"):
        async with Cancelable(name="job") as op:
            raise ValueError("bad row")
    copy = pickle.loads(pickle.dumps(op.context))
    assert copy.status is OperationStatus.FAILED
    assert isinstance(copy.error, ValueError)
    assert str(copy.error) == "bad row"


def test_unused_context_pickles_with_its_id() -> None:
    ctx = OperationContext(name="x")
    copy = pickle.loads(pickle.dumps(ctx))
    assert copy.id == ctx.id


def test_copy_is_detached() -> None:
    ctx = OperationContext(name="x", metadata={"a": 1})
    snap = ctx.copy()
    ctx.metadata["b"] = 2
    ctx.status = OperationStatus.RUNNING
    assert snap.metadata == {"a": 1}
    assert snap.status is OperationStatus.PENDING
    assert snap.id == ctx.id


@pytest.mark.anyio
async def test_to_dict_is_json_friendly() -> None:
    import json

    with pytest.raises(ManualCancelation):
        async with Cancelable(name="job") as op:
            await op.cancel("stop")
    data = op.context.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["status"] == "cancelled"
    assert data["cancel_reason"] == "manual"
    assert data["cancel_message"] == "stop"
    assert "job" in repr(op.context)
    assert "reason=manual" in repr(op.context)


def test_enums_values() -> None:
    assert {s.value for s in OperationStatus} == {
        "pending",
        "running",
        "completed",
        "cancelled",
        "failed",
        "shielded",
        "timeout",  # named as in the seed library, never set
    }
    assert {r.value for r in CancelationReason} == {
        "timeout",
        "manual",
        "signal",
        "condition",
        "parent",
        "error",
    }
    terminal = {s for s in OperationStatus if s.is_terminal}
    assert terminal == {
        OperationStatus.COMPLETED,
        OperationStatus.CANCELLED,
        OperationStatus.FAILED,
        OperationStatus.TIMEOUT,
    }


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (TimeoutCancelation, CancelationReason.TIMEOUT),
        (ManualCancelation, CancelationReason.MANUAL),
        (SignalCancelation, CancelationReason.SIGNAL),
        (ConditionCancelation, CancelationReason.CONDITION),
        (ParentCancelation, CancelationReason.PARENT),
    ],
)
def test_exceptions_carry_reason_message_context_and_pickle(
    cls: type[CancelationError], reason: CancelationReason
) -> None:
    ctx = OperationContext(name="job")
    ctx.partial_result = [1, 2]
    err = cls(message="why", context=ctx)
    assert isinstance(err, CancelationError)
    assert isinstance(err, Exception)
    assert err.reason is reason
    assert err.message == "why"
    assert str(err) == "why"
    assert err.partial_result == [1, 2]
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls
    assert copy.reason is reason
    assert copy.message == "why"
    assert copy.context is not None
    assert copy.context.partial_result == [1, 2]
    # Public module name, in tracebacks and pickles.
    assert cls.__module__ == "cancelpool"


def test_timeout_cancelation_is_a_timeout_error() -> None:
    assert issubclass(TimeoutCancelation, TimeoutError)
    assert not issubclass(ManualCancelation, TimeoutError)


def test_default_message_names_the_reason() -> None:
    assert "timeout" in TimeoutCancelation().message
    assert CancelationError().reason is CancelationReason.MANUAL


def test_public_objects_carry_public_module() -> None:
    for name in (
        "Cancelable",
        "CancelationToken",
        "OperationContext",
        "OperationStatus",
        "CancelationReason",
        "OperationRegistry",
    ):
        assert getattr(cancelpool, name).__module__ == "cancelpool", name


def test_double_l_aliases_are_the_same_objects() -> None:
    assert cancelpool.Cancellable is cancelpool.Cancelable
    assert cancelpool.CancellationToken is cancelpool.CancelationToken
    assert cancelpool.LinkedCancellationToken is cancelpool.LinkedCancelationToken
    assert cancelpool.CancellationError is cancelpool.CancelationError

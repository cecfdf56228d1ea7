"""SharedToken: a CancelationToken whose flag is a TokenTable slot."""

from __future__ import annotations

import pickle
import threading

import anyio
import pytest

from cancelpool import Cancelable
from cancelpool._core._enums import CancelationReason
from cancelpool._core._exceptions import CancelationError, ParentCancelation, TimeoutCancelation
from cancelpool._core._token import CancelationToken
from cancelpool.shm import Doorbell, SharedToken, SlotRef, TokenTable

# Real-time bound on waits that should end at once: a deadlock backstop, never used to
# order events.
BACKSTOP = 30.0

TIMEOUT = CancelationReason.TIMEOUT
MANUAL = CancelationReason.MANUAL
PARENT = CancelationReason.PARENT


def test_is_a_cancelation_token(table: TokenTable) -> None:
    token = SharedToken(table, table.allocate())
    assert isinstance(token, CancelationToken)
    assert type(token).__module__ == "cancelpool.shm"
    assert not token.is_cancelled
    assert token.reason is None
    assert token.message is None
    token.check()


def test_supervisor_cancel_writes_the_slot(table: TokenTable, reader: TokenTable) -> None:
    ref = table.allocate()
    supervisor = SharedToken(table, ref)
    worker = SharedToken(reader, ref)
    fired: list[CancelationToken] = []
    supervisor.add_listener(fired.append)

    assert supervisor.cancel_sync(TIMEOUT, "too slow") is True
    assert fired == [supervisor]
    assert reader.state(ref) == (True, TIMEOUT)
    assert worker.is_cancelled
    assert worker.reason is TIMEOUT
    assert supervisor.message == "too slow"
    with pytest.raises(TimeoutCancelation):
        worker.check()
    assert supervisor.cancel_sync() is False


def test_worker_cancel_stays_local(table: TokenTable, reader: TokenTable) -> None:
    ref = table.allocate()
    worker = SharedToken(reader, ref)
    assert worker.cancel_sync(MANUAL) is True
    assert worker.is_cancelled
    assert worker.reason is MANUAL
    assert table.state(ref) == (False, None)  # workers never write shared memory


def test_sync_from_table_fires_listeners_and_callbacks_once(
    table: TokenTable, reader: TokenTable
) -> None:
    ref = table.allocate()
    worker = SharedToken(reader, ref)
    fired: list[CancelationToken] = []
    messages: list[str] = []
    worker.add_listener(fired.append)
    worker.register_callback(messages.append)

    assert worker.sync_from_table() is False  # nothing to sync yet
    table.cancel(ref, TIMEOUT)
    # The flag is the truth at once; listeners wait for the doorbell handler.
    assert worker.is_cancelled
    assert worker.reason is TIMEOUT
    assert fired == []

    assert worker.sync_from_table("job 7 timed out") is True
    assert fired == [worker]
    assert messages == ["job 7 timed out"]
    assert worker.message == "job 7 timed out"
    assert worker.sync_from_table() is False
    assert fired == [worker]


def test_ancestor_cancel_reaches_the_token_as_parent(table: TokenTable, reader: TokenTable) -> None:
    root = table.allocate()
    child = table.allocate(table.allocate(root))
    worker = SharedToken(reader, child)
    fired: list[CancelationToken] = []
    worker.add_listener(fired.append)

    SharedToken(table, root).cancel_sync(MANUAL)
    assert worker.is_cancelled
    assert worker.reason is PARENT
    assert worker.message == "token cancelled (parent)"
    with pytest.raises(ParentCancelation):
        worker.check()
    assert worker.sync_from_table() is True
    assert fired == [worker]
    assert worker.reason is PARENT


def test_first_cancellation_wins(table: TokenTable, reader: TokenTable) -> None:
    ref = table.allocate()
    worker = SharedToken(reader, ref)
    table.cancel(ref, TIMEOUT)
    # The worker's own cancel arrives after the supervisor's: the slot's reason stands.
    assert worker.cancel_sync(MANUAL, "stop") is True
    assert worker.reason is TIMEOUT
    assert worker.message == "stop"


def test_stale_ref_token_is_not_cancelled_by_the_next_job(table: TokenTable) -> None:
    old = table.allocate()
    token = SharedToken(table, old)
    table.release(old)
    new = table.allocate()
    assert new.index == old.index
    table.cancel(new, TIMEOUT)
    assert not token.is_cancelled
    assert token.sync_from_table() is False
    token.cancel_sync()  # cancelling the stale token leaves the new job alone
    assert table.state(new) == (True, TIMEOUT)
    assert token.reason is MANUAL


def test_cancel_after_the_table_is_closed_stays_local() -> None:
    table = TokenTable.create(2)
    token = SharedToken(table, table.allocate())
    table.close()
    with pytest.raises(ValueError, match="closed"):
        _ = token.is_cancelled
    assert token.cancel_sync() is True
    assert token.is_cancelled


def test_cancel_from_another_thread(table: TokenTable, reader: TokenTable) -> None:
    ref = table.allocate()
    supervisor = SharedToken(table, ref)
    thread = threading.Thread(target=supervisor.cancel_sync, args=(TIMEOUT,))
    thread.start()
    thread.join(BACKSTOP)
    assert reader.state(ref) == (True, TIMEOUT)


def test_rejects_bad_arguments(table: TokenTable) -> None:
    with pytest.raises(TypeError, match="must be a TokenTable"):
        SharedToken(object(), SlotRef(0, 0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        SharedToken(table, SlotRef(table.capacity, 0))


def test_pickling_says_what_to_send_instead(table: TokenTable) -> None:
    token = SharedToken(table, table.allocate())
    with pytest.raises(TypeError, match=r"send its SlotRef"):
        pickle.dumps(token)
    assert "slot=0" in repr(token)


@pytest.mark.anyio
async def test_doorbell_wakes_a_task_waiting_on_the_token(
    table: TokenTable, reader: TokenTable
) -> None:
    """The worker's path end to end, in one process: slot write + ring -> loop wakes ->
    sync_from_table() -> listener -> ``wait_for_cancel()`` returns."""
    ref = table.allocate(table.allocate())
    worker = SharedToken(reader, ref)
    woken: list[CancelationReason | None] = []

    async def doorbell_handler(bell: Doorbell) -> None:
        while True:
            await anyio.wait_readable(bell.fileno())
            bell.drain()
            worker.sync_from_table()

    async def job() -> None:
        await worker.wait_for_cancel()
        woken.append(worker.reason)

    with Doorbell() as bell, anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(doorbell_handler, bell)
            async with anyio.create_task_group() as jobs:
                jobs.start_soon(job)
                await anyio.wait_all_tasks_blocked()
                assert woken == []
                table.cancel(SlotRef(0, 0), TIMEOUT)  # the parent
                bell.ring()
            tg.cancel_scope.cancel()
    assert woken == [PARENT]


def test_listener_added_after_a_remote_cancel_fires_at_once(
    table: TokenTable, reader: TokenTable
) -> None:
    ref = table.allocate()
    worker = SharedToken(reader, ref)
    table.cancel(ref, TIMEOUT)  # before the worker even looks: no doorbell handled yet
    fired: list[CancelationToken] = []
    worker.add_listener(fired.append)
    assert fired == [worker]
    assert worker.reason is TIMEOUT


@pytest.mark.anyio
async def test_cancelable_entered_after_a_remote_cancel_is_cancelled(
    table: TokenTable, reader: TokenTable
) -> None:
    """A job cancelled while still queued, entering its ``Cancelable`` in the worker."""
    ref = table.allocate(table.allocate())
    table.cancel(SlotRef(0, 0), TIMEOUT)  # the parent job
    reached: list[str] = []

    async def job() -> None:
        async with Cancelable.with_token(SharedToken(reader, ref)):
            reached.append("body")
            await anyio.sleep(BACKSTOP)
            reached.append("after sleep")

    with anyio.fail_after(BACKSTOP), pytest.raises(CancelationError) as info:
        await job()
    assert info.value.reason is PARENT
    assert "after sleep" not in reached


@pytest.mark.anyio
async def test_cancelable_awaiting_is_woken_by_the_doorbell(
    table: TokenTable, reader: TokenTable
) -> None:
    ref = table.allocate()
    token = SharedToken(reader, ref)

    async def doorbell_handler(bell: Doorbell) -> None:
        while True:
            await anyio.wait_readable(bell.fileno())
            bell.drain()
            token.sync_from_table("cancelled by the user")

    async def job(done: list[CancelationError]) -> None:
        try:
            async with Cancelable.with_token(token):
                await anyio.sleep(BACKSTOP)
        except CancelationError as exc:
            done.append(exc)

    done: list[CancelationError] = []
    with Doorbell() as bell, anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(doorbell_handler, bell)
            async with anyio.create_task_group() as jobs:
                jobs.start_soon(job, done)
                await anyio.wait_all_tasks_blocked()
                table.cancel(ref, MANUAL)
                bell.ring()
            tg.cancel_scope.cancel()
    assert [(exc.reason, exc.message) for exc in done] == [(MANUAL, "cancelled by the user")]

"""TokenTable in one process: slots, generations, parent chains, errors, lifetime."""

from __future__ import annotations

import os
import pickle

import pytest

from cancelpool._core._enums import CancelationReason
from cancelpool.shm import MAX_CAPACITY, SlotRef, TableFull, TokenTable

TIMEOUT = CancelationReason.TIMEOUT
MANUAL = CancelationReason.MANUAL
PARENT = CancelationReason.PARENT


# -- allocation, release, generations -----------------------------------------------------
def test_allocate_gives_distinct_live_slots(table: TokenTable) -> None:
    refs = [table.allocate() for _ in range(table.capacity)]
    assert len({ref.index for ref in refs}) == table.capacity
    assert all(table.is_live(ref) for ref in refs)
    assert table.used == table.capacity
    assert all(table.state(ref) == (False, None) for ref in refs)


def test_release_bumps_generation_and_frees_the_slot(table: TokenTable) -> None:
    ref = table.allocate()
    assert table.release(ref) is True
    assert table.used == 0
    assert not table.is_live(ref)
    assert table.release(ref) is False  # double release is a no-op
    again = table.allocate()
    assert again.index == ref.index
    assert again.generation == ref.generation + 1


@pytest.mark.parametrize("reason", list(CancelationReason))
def test_cancel_records_the_reason(table: TokenTable, reason: CancelationReason) -> None:
    ref = table.allocate()
    other = table.allocate()
    assert table.cancel(ref, reason) is True
    assert table.state(ref) == (True, reason)
    assert table.is_cancelled(ref)
    assert table.state(other) == (False, None)


def test_cancel_twice_keeps_the_first_reason(table: TokenTable) -> None:
    ref = table.allocate()
    assert table.cancel(ref, TIMEOUT) is True
    assert table.cancel(ref, MANUAL) is False
    assert table.state(ref) == (True, TIMEOUT)


def test_stale_ref_never_reads_cancelled_after_reuse(table: TokenTable) -> None:
    stale = table.allocate()
    table.cancel(stale, TIMEOUT)
    table.release(stale)
    assert table.state(stale) == (False, None)

    fresh = table.allocate()
    assert fresh.index == stale.index
    assert table.state(fresh) == (False, None)  # the reused slot starts clean
    assert table.cancel(stale, MANUAL) is False  # a stale ref cannot cancel the new job
    assert table.state(fresh) == (False, None)

    table.cancel(fresh, MANUAL)
    assert table.state(fresh) == (True, MANUAL)
    assert table.state(stale) == (False, None)
    assert not table.is_cancelled(stale)
    assert table.release(stale) is False  # nor release it


def test_many_reuse_cycles_keep_generations_apart(table: TokenTable) -> None:
    seen: list[SlotRef] = []
    for _ in range(50):
        ref = table.allocate()
        table.cancel(ref)
        seen.append(ref)
        table.release(ref)
    live = table.allocate()
    assert all(not table.is_cancelled(ref) for ref in seen)
    assert all(ref != live for ref in seen)


def test_full_table_says_to_raise_the_capacity() -> None:
    with TokenTable.create(2) as table:
        table.allocate()
        last = table.allocate()
        with pytest.raises(TableFull, match=r"all 2 slots.*larger capacity"):
            table.allocate()
        assert isinstance(TableFull("x"), RuntimeError)
        table.release(last)
        table.allocate()  # room again


@pytest.mark.parametrize("capacity", [0, -1, MAX_CAPACITY + 1, 1.5])
def test_bad_capacity_is_rejected(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity must be an int between 1 and"):
        TokenTable.create(capacity)  # type: ignore[arg-type]


def test_out_of_range_refs_are_rejected(table: TokenTable) -> None:
    bad = SlotRef(table.capacity, 0)
    for call in (table.release, table.cancel, table.allocate, table.is_live):
        with pytest.raises(ValueError, match="out of range"):
            call(bad)


# -- parent chains ------------------------------------------------------------------------
def test_child_and_grandchild_see_an_ancestor_cancel(table: TokenTable) -> None:
    root = table.allocate()
    child = table.allocate(root)
    grandchild = table.allocate(child)
    sibling = table.allocate()
    assert not table.is_cancelled(grandchild)

    table.cancel(root, TIMEOUT)
    assert table.state(root) == (True, TIMEOUT)
    assert table.state(child) == (True, PARENT)
    assert table.state(grandchild) == (True, PARENT)
    assert table.is_cancelled(grandchild)
    assert table.state(sibling) == (False, None)


def test_cancelling_a_middle_job_spares_its_ancestors(table: TokenTable) -> None:
    root = table.allocate()
    middle = table.allocate(root)
    leaf = table.allocate(middle)
    table.cancel(middle, MANUAL)
    assert table.state(root) == (False, None)
    assert table.state(middle) == (True, MANUAL)
    assert table.state(leaf) == (True, PARENT)


def test_own_reason_wins_over_parent(table: TokenTable) -> None:
    root = table.allocate()
    child = table.allocate(root)
    table.cancel(child, TIMEOUT)
    table.cancel(root, MANUAL)
    assert table.state(child) == (True, TIMEOUT)


def test_child_of_cancelled_parent_is_born_cancelled(table: TokenTable) -> None:
    root = table.allocate()
    table.cancel(root)
    assert table.state(table.allocate(root)) == (True, PARENT)


def test_parent_link_with_stale_generation_is_ignored(table: TokenTable) -> None:
    root = table.allocate()
    table.release(root)
    reused = table.allocate()  # same slot, next generation
    assert reused.index == root.index
    orphan = table.allocate(root)  # links to a generation that no longer exists
    table.cancel(reused, TIMEOUT)
    assert table.state(orphan) == (False, None)


def test_released_parent_stays_visible_until_its_last_child_is_released(
    table: TokenTable,
) -> None:
    root = table.allocate()
    child = table.allocate(root)
    grandchild = table.allocate(child)
    table.cancel(root, TIMEOUT)

    # The jobs finish in the "wrong" order: ancestors first.
    assert table.release(root) is True
    assert table.release(child) is True
    assert table.release(root) is False
    assert table.cancel(root) is False  # released, even though it is kept readable
    assert table.state(grandchild) == (True, PARENT)
    assert table.used == 3

    assert table.release(grandchild) is True
    assert table.used == 0
    assert not any(table.is_live(ref) for ref in (root, child, grandchild))
    new = [table.allocate() for _ in range(3)]
    assert all(table.state(ref) == (False, None) for ref in new)


def test_parent_with_two_children_is_freed_after_both(table: TokenTable) -> None:
    root = table.allocate()
    a = table.allocate(root)
    b = table.allocate(root)
    table.release(root)
    table.release(a)
    assert table.is_live(root)
    table.cancel(root)  # refused: released
    assert table.state(b) == (False, None)
    table.release(b)
    assert not table.is_live(root)
    assert table.used == 0


# -- readers ------------------------------------------------------------------------------
def test_reader_sees_writes_at_once(table: TokenTable, reader: TokenTable) -> None:
    root = table.allocate()
    child = table.allocate(root)
    assert table.writer
    assert not reader.writer
    assert reader.capacity == table.capacity
    assert reader.used == 2
    assert reader.state(child) == (False, None)
    table.cancel(root, TIMEOUT)
    assert reader.state(root) == (True, TIMEOUT)
    assert reader.state(child) == (True, PARENT)
    table.release(child)
    assert reader.state(child) == (False, None)


def test_reader_cannot_write(table: TokenTable, reader: TokenTable) -> None:
    ref = table.allocate()
    for call, args in ((reader.allocate, ()), (reader.release, (ref,)), (reader.cancel, (ref,))):
        with pytest.raises(RuntimeError, match="only be called in the process that created"):
            call(*args)
    assert table.state(ref) == (False, None)


def test_attach_rejects_an_fd_that_is_not_a_table() -> None:
    fd = os.memfd_create("not-a-table")
    os.ftruncate(fd, 64)
    with pytest.raises(ValueError, match="does not hold a cancelpool token table"):
        TokenTable.attach(fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # the table took ownership of the fd and closed it


# -- lifetime -----------------------------------------------------------------------------
def test_segment_is_anonymous_memory() -> None:
    with TokenTable.create(4) as table:
        target = os.readlink(f"/proc/self/fd/{table.fileno()}")
    assert target.startswith("/memfd:cancelpool-tokens")


def test_close_is_idempotent_and_later_use_fails_clearly() -> None:
    table = TokenTable.create(4)
    ref = table.allocate()
    fd = table.fileno()
    table.close()
    table.close()
    assert table.closed
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    with pytest.raises(ValueError, match="closed"):
        table.is_cancelled(ref)
    with pytest.raises(ValueError, match="closed"):
        table.fileno()
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(table)
    assert "closed" in repr(table)


def test_closing_the_writer_leaves_readers_working(table: TokenTable) -> None:
    ref = table.allocate()
    table.cancel(ref, TIMEOUT)
    with TokenTable.attach(os.dup(table.fileno())) as reader:
        table.close()
        assert reader.state(ref) == (True, TIMEOUT)


def test_slotref_pickles_by_its_public_name() -> None:
    ref = SlotRef(3, 7)
    assert pickle.loads(pickle.dumps(ref)) == ref
    assert b"cancelpool.shm" in pickle.dumps(ref)

"""The supervisor's view of a worker's loop: rings are counted, not timed.

White-box: these are the rules the forced stop follows (who waits for the watchdog's
verdict, and what ends the wait), checked on a real doorbell. The end-to-end blame,
with real workers whose loop a job blocks, is in test_watchdog.py.
"""

from __future__ import annotations

import time

from cancelpool._pool import _protocol as proto
from cancelpool._pool._loop_state import LoopState
from cancelpool.shm import Doorbell


def test_a_late_heard_for_an_earlier_ring_does_not_cover_a_later_one() -> None:
    # The race the clock stamps had: the worker drained ring 1 and said so, the
    # supervisor rang again (ring 2) before it read that BellHeard. Read after ring
    # 2, it must not count for ring 2.
    state = LoopState()
    with Doorbell() as bell:
        first = state.ring(bell)
        assert bell.drain() == 1  # the worker hears ring 1 ...
        second = state.ring(bell)  # ... the supervisor rings again meanwhile
        assert state.wants_verdict(job=7, ring=second)
        assert state.heard(first) == []  # BellHeard(1) arrives: job 7 still waits
        assert not state.was_heard(second)
        assert state.heard(first + bell.drain()) == [7]  # BellHeard(2): it heard
        assert state.was_heard(second)


def test_a_stop_waits_for_a_verdict_once_and_only_when_the_ring_went_unheard() -> None:
    state = LoopState()
    with Doorbell() as bell:
        ring = state.ring(bell)
        state.heard(bell.drain())
        assert not state.wants_verdict(job=1, ring=ring)  # heard: the loop turns
        later = state.ring(bell)
        assert state.wants_verdict(job=2, ring=later)
        assert not state.wants_verdict(job=2, ring=later)  # once per job


def test_a_watchdog_report_ends_every_wait_and_names_the_blocker() -> None:
    state = LoopState()
    with Doorbell() as bell:
        ring = state.ring(bell)
        assert state.wants_verdict(job=3, ring=ring)
        assert state.wants_verdict(job=4, ring=ring)
        assert sorted(state.report(proto.LoopBlocked(9, 1.5, "stack"))) == [3, 4]
        assert state.blocked_job == 9
        assert state.blocked
        assert state.blocked_for(time.monotonic()) >= 1.5  # it said: held for 1.5 s
        # A block is reported: no later stop waits, the blocker is known.
        assert not state.wants_verdict(job=5, ring=state.ring(bell))
        state.report(proto.LoopResumed(2.0))
        assert state.blocked_job is None
        assert not state.blocked
        assert state.blocked_for(time.monotonic()) == 0.0

"""The supervisor's timers: when arming one wakes the supervisor thread."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator

import pytest

from cancelpool._pool._timers import BACKSTOP, FORCE, Timers
from cancelpool._pool._wakeup import Wakeup


@pytest.fixture
def wakeup() -> Iterator[Wakeup]:
    w = Wakeup()
    w.open()
    yield w
    w.close()


def _woken(wakeup: Wakeup) -> bool:
    """Whether a wake-up byte is waiting (and take it)."""
    ready = bool(select.select([wakeup.fd], [], [], 0)[0])
    if ready:
        wakeup.drain()
    return ready


def test_a_timer_due_after_the_supervisors_poll_ends_wakes_nobody(wakeup: Wakeup) -> None:
    timers = Timers(wakeup)
    now = time.monotonic()
    timers.sleeping_until = now + 1.0
    timers.add(now + 5.0, 1, 1, FORCE, 1)
    assert not _woken(wakeup)
    # The supervisor finds it when it looks up: it is the next deadline.
    assert timers.next_deadline() == now + 5.0


def test_a_timer_due_before_the_poll_ends_wakes_the_supervisor(wakeup: Wakeup) -> None:
    timers = Timers(wakeup)
    now = time.monotonic()
    timers.sleeping_until = now + 1.0
    timers.add(now + 0.5, 1, 1, BACKSTOP)
    assert _woken(wakeup)
    assert [t.job for t in timers.pop_due(now + 0.6)] == [1]


def test_a_supervisor_waiting_for_ever_is_woken_by_any_timer(wakeup: Wakeup) -> None:
    timers = Timers(wakeup)
    assert timers.sleeping_until is None
    timers.add(time.monotonic() + 3600.0, 1, 1, FORCE)
    assert _woken(wakeup)
    assert not _woken(wakeup)

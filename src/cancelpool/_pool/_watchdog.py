"""The worker's watchdog: a thread that sees the worker's event loop stop turning.

::

    event loop thread                       watchdog thread
    -----------------                       ---------------------------------------
    each turn (asyncio: around select;  --> turns, last_turn, waiting
      uvloop: a call_later every step)        (plain attributes)
    doorbell reader: heard_bell()       --> bells              each step, poll(bell,
                                                               0): a ring undrained?
                                            silent > threshold, or a ring unheard
                                            for CANCEL_UNHEARD, the same task
                                            holding it all along:
                                              sys._current_frames()[loop thread]
                                              asyncio.current_task(loop) -> job id
                                              LoopBlocked --> outbox (written by this
                                                thread: the loop cannot write it)
                                            turns again: LoopResumed --> outbox

One job that computes in an async function without awaiting (CPU work, ``time.sleep``,
a blocking call) holds the loop, and with it every other job of the worker: none can
run, and none can hear its cancellation. The watchdog says which job it is and where it
is, so that the supervisor blames that job, not the one whose cancellation went unheard.

It reads the loop's state without locks: each value is one attribute written by the
loop thread, and a stale read only delays a report by one step.

How a turn is seen: on asyncio's selector loop, by wrapping its selector's ``select``:
each call is a turn, and a loop waiting in it is idle, not blocked. No timer is added to
the loop, which matters: a periodic ``call_later`` in an asyncio loop makes its other
timers fire later (measured: a 4 Hz heartbeat moved a job's 0.2 s timeout from p50
0.70 to 0.85 ms late, p99 1.0 to 2.0 ms; a 20 Hz one to 1 ms). Loops without a Python
selector (uvloop) get a heartbeat every ``step`` instead (no such effect measured there).
"""

from __future__ import annotations

import asyncio
import select
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from . import _protocol as proto

#: Seconds a doorbell ring (a cancellation, or a child's outcome) may wait for the loop
#: to hear it before the loop is reported blocked, whatever the threshold. A healthy
#: loop hears it within one iteration (microseconds); this only has to stay above the
#: longest ordinary loop callback, and well below the shortest useful cancel grace, so
#: that the supervisor knows whom to blame before it has to force a stop.
CANCEL_UNHEARD = 0.1
#: Innermost frames of the blocked stack that are sent (a deep recursion would
#: otherwise fill a frame): the innermost ones say where the loop is held.
MAX_STACK_FRAMES = 40
#: Characters of stack text sent at most.
MAX_STACK_TEXT = 16_000
# No task seen yet (None means: the loop runs no task now).
_NOBODY = object()


class LoopWatchdog:
    """Watches one event loop from a thread of its own; see the module docstring.

    ``job_of`` maps the loop's current task to the job it runs (None for a task that is
    no job's own); ``boundary`` is the code of the coroutine that runs a job, whose
    callers are the worker's machinery and are left out of the stack; ``send`` writes
    a message to the supervisor from this thread, even while the loop is blocked.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        bell_fd: int,
        job_of: Callable[[asyncio.Task[Any] | None], int | None],
        boundary: CodeType,
        send: Callable[[Any], None],
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.unheard = min(threshold, CANCEL_UNHEARD)
        # The heartbeat's period: a report comes at most one step late. Shorter costs
        # more wake-ups of an idle loop (a timer callback each, microseconds).
        self.step = max(0.01, min(0.25, threshold / 4))
        self.bell_fd = bell_fd
        self.job_of = job_of
        self.boundary = boundary
        self.send = send
        self.turns = 0
        self.last_turn = time.monotonic()
        # The loop waits in select() now: idle, however long since its last turn.
        self.waiting = False
        self.bells = 0
        self.loop_thread = threading.get_ident()
        self._stopped = threading.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._selector: Any = None
        self._thread: threading.Thread | None = None

    # -- loop thread ------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching (from the loop's own thread, while the loop runs)."""
        self.loop_thread = threading.get_ident()
        selector = getattr(self.loop, "_selector", None)
        if callable(getattr(selector, "select", None)):
            self._count_turns(selector)
        else:
            self._beat()
        self._thread = threading.Thread(
            target=self._watch, name="cancelpool-loop-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (loop thread); waits briefly for a report being written."""
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._selector is not None:
            del self._selector.select  # the class's own again
            self._selector = None
        if self._thread is not None:
            self._thread.join(1.0)

    def _count_turns(self, selector: Any) -> None:
        # An attribute of this selector alone, shadowing its class's method.
        select = selector.select
        monotonic = time.monotonic

        def counting_select(timeout: float | None = None) -> Any:
            self.waiting = True
            try:
                return select(timeout)
            finally:
                # last_turn first: whoever sees waiting False sees a fresh last_turn.
                self.last_turn = monotonic()
                self.turns += 1
                self.waiting = False

        selector.select = counting_select
        self._selector = selector

    def silent_for(self, now: float) -> float:
        """Seconds since the loop last turned, 0 while it waits for events."""
        return 0.0 if self.waiting else now - self.last_turn

    def heard_bell(self) -> None:
        """The loop drained its doorbell (called by the worker's doorbell reader)."""
        self.bells += 1

    def _beat(self) -> None:
        self.turns += 1
        self.last_turn = time.monotonic()
        self._timer = self.loop.call_later(self.step, self._beat)

    # -- watchdog thread --------------------------------------------------------------------
    def _watch(self) -> None:
        poller = select.poll()
        poller.register(self.bell_fd, select.POLLIN)
        stopped = self._stopped
        # Who holds the loop, sampled at every wake-up, and since when. A loop that is
        # only busy (one iteration running thousands of short callbacks, as a
        # cancel_all over thousands of jobs makes it) may not beat for a second
        # either, but its current task changes from sample to sample: it is not
        # blocked, and no job is to blame.
        held: object = _NOBODY
        held_since = 0.0

        def same_holder_for(seconds: float) -> bool:
            nonlocal held, held_since
            now = time.monotonic()
            task = self._current_task()
            if task is not held:
                held, held_since = task, now
            return now - held_since >= seconds

        # The doorbell is looked at once a step, not waited on: woken by every ring,
        # this thread would take the GIL from the loop just when it has a
        # cancellation to deliver (measured: +100 us per cancel on 2 cores).
        while not stopped.wait(self.step):
            bells = self.bells
            held_long = same_holder_for(self.threshold / 2)
            if poller.poll(0):  # a ring is pending: does the loop hear it?
                heard_by = time.monotonic() + self.unheard
                while self.bells == bells and not stopped.wait(self.unheard / 5):
                    held_long = same_holder_for(self.unheard)
                    now = time.monotonic()
                    if (
                        now >= heard_by
                        and held_long
                        and self.silent_for(now) > self.step + self.unheard
                    ):
                        self._blocked()
                        break
            elif held_long and self.silent_for(time.monotonic()) > self.threshold:
                self._blocked()

    def _current_task(self) -> asyncio.Task[Any] | None:
        try:
            # From this thread: the loop's current task, read from asyncio's table.
            return asyncio.current_task(self.loop)
        except RuntimeError:
            return None

    def _blocked(self) -> None:
        """Report the block, then wait for the loop to turn again and say so."""
        now = time.monotonic()
        since = self.last_turn
        turns = self.turns
        frame = sys._current_frames().get(self.loop_thread)
        job = self.job_of(self._current_task())
        stack = format_stack(frame, self.boundary)
        del frame
        self.send(proto.LoopBlocked(job, round(now - since, 3), stack))
        while self.turns == turns and not self._stopped.wait(self.step):
            pass
        if self.turns != turns:
            self.send(proto.LoopResumed(round(self.last_turn - since, 3)))


def format_stack(frame: FrameType | None, boundary: CodeType) -> str:
    """The stack of ``frame`` as traceback text, outermost first, from inside the
    ``boundary`` code (the job's own frames) if it is on the stack, else all of it."""
    frames: list[tuple[FrameType, int]] = []
    while frame is not None and frame.f_code is not boundary:
        frames.append((frame, frame.f_lineno or 0))
        frame = frame.f_back
    frames = frames[:MAX_STACK_FRAMES]
    frames.reverse()
    text = "".join(traceback.StackSummary.extract(iter(frames)).format())
    if len(text) > MAX_STACK_TEXT:
        text = "...\n" + text[-MAX_STACK_TEXT:]
    # Source lines are data: text that is not valid UTF-8 must not break the message.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")

"""The worker process's outbox, seen from its pipe: how its messages are batched.

These drive the real ``Worker`` object over real pipes, a real ``TokenTable`` and a
real ``Doorbell``, on an event loop in the test process (the pool's own tests run it
in a child process; here the frames it writes can be read one by one).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe
from typing import Any

import pytest

from cancelpool._pool import _protocol as proto
from cancelpool._pool._worker_process import FLUSH_BATCH, Worker
from cancelpool.shm import Doorbell, SlotRef, TokenTable

from ._jobs import add

#: Backstop for a loop that should finish in milliseconds.
_BACKSTOP = 30.0


@dataclass
class _Rig:
    table: TokenTable
    bell: Doorbell
    inbox_r: Connection
    inbox_w: Connection
    outbox_r: Connection
    outbox_w: Connection
    refs: list[SlotRef] = field(default_factory=list)

    def runs(self, count: int) -> list[proto.Run]:
        fn = pickle.dumps(add)
        runs = []
        for job in range(count):
            ref = self.table.allocate()
            self.refs.append(ref)
            args = pickle.dumps(((job, 1), {}))
            runs.append(proto.Run(job, ref.index, ref.generation, fn, args, None, None, True))
        return runs


@contextmanager
def _rig(capacity: int) -> Iterator[_Rig]:
    table = TokenTable.create(capacity)
    bell = Doorbell()
    inbox_r, inbox_w = Pipe(duplex=False)
    outbox_r, outbox_w = Pipe(duplex=False)
    try:
        yield _Rig(table, bell, inbox_r, inbox_w, outbox_r, outbox_w)
    finally:
        for conn in (inbox_r, inbox_w, outbox_r, outbox_w):
            conn.close()
        bell.close()
        table.close()


def _serve(rig: _Rig, frames_in: list[bytes]) -> list[list[Any]]:
    """Feed ``frames_in`` to a worker's inbox, then Stop; every frame it wrote, decoded.

    The loop runs the worker's own inbox and doorbell handlers, as ``Worker.run`` does
    (minus the supervisor watch, whose thread would outlive the test).
    """
    worker = Worker(rig.table, rig.bell, rig.inbox_r, rig.outbox_w, os.getpid())
    chunks: list[bytes] = []

    def read_outbox() -> None:
        fd = rig.outbox_r.fileno()
        while data := os.read(fd, 1 << 16):
            chunks.append(data)

    reader = threading.Thread(target=read_outbox, name="test-outbox-reader")
    reader.start()

    async def main() -> None:
        loop = worker.loop = asyncio.get_running_loop()
        worker.thread_id = threading.get_ident()
        worker.finished = asyncio.Event()
        worker.in_fd = rig.inbox_r.fileno()
        worker.out_fd = rig.outbox_w.fileno()
        os.set_blocking(worker.in_fd, False)
        os.set_blocking(worker.out_fd, False)
        loop.add_reader(worker.in_fd, worker._on_inbox)
        loop.add_reader(rig.bell.fileno(), worker._on_bell)
        try:
            for data in frames_in:
                os.write(rig.inbox_w.fileno(), data)
            # Stop once every job has been started: it waits for them to end.
            os.write(rig.inbox_w.fileno(), proto.frame([proto.Stop()]))
            await asyncio.wait_for(worker.finished.wait(), _BACKSTOP)
            worker._flush()
        finally:
            loop.remove_reader(worker.in_fd)
            loop.remove_reader(rig.bell.fileno())

    try:
        asyncio.run(main())
    finally:
        rig.outbox_w.close()  # EOF for the reader
        reader.join(_BACKSTOP)
    assert not reader.is_alive()
    frames = proto.FrameReader().feed(b"".join(chunks))
    return [proto.from_worker_decoder.decode(frame) for frame in frames]


@pytest.mark.parametrize("count", [2, 64, FLUSH_BATCH])
def test_jobs_that_end_in_one_loop_iteration_share_one_frame(count: int) -> None:
    # A batch of trivial jobs arrives in one read; each runs to its end in turn within
    # one loop iteration. Their outcomes leave in one write, not one write per job.
    with _rig(count + 1) as rig:
        frames = _serve(rig, [proto.frame(rig.runs(count))])
    done = [m for frame in frames for m in frame if isinstance(m, proto.Done)]
    assert sorted(m.job for m in done) == list(range(count))
    assert [pickle.loads(m.result) for m in sorted(done, key=lambda m: m.job)] == [
        job + 1 for job in range(count)
    ]
    frames_with_done = [f for f in frames if any(isinstance(m, proto.Done) for m in f)]
    assert len(frames_with_done) == 1
    # None was announced (each ended before the flush that would say Started), but the
    # one whose outcome filled the batch, which is still running while it is sent.
    started = [m for frame in frames for m in frame if isinstance(m, proto.Started)]
    assert len(started) <= (1 if count >= FLUSH_BATCH else 0)


def test_a_burst_beyond_the_batch_size_leaves_in_slices() -> None:
    # The supervisor works on the first outcomes while the worker makes the rest.
    count = FLUSH_BATCH * 3
    with _rig(count + 1) as rig:
        frames = _serve(rig, [proto.frame(rig.runs(count))])
    sizes = [sum(isinstance(m, proto.Done) for m in frame) for frame in frames]
    assert sum(sizes) == count
    assert max(sizes) <= FLUSH_BATCH
    assert len([s for s in sizes if s]) >= 3


def test_jobs_cancelled_while_queued_are_answered_in_the_same_frame() -> None:
    # Cancelled before the worker read them: none starts, all answers leave together.
    with _rig(9) as rig:
        runs = rig.runs(8)
        for ref in rig.refs[::2]:
            rig.table.cancel(ref)
        frames = _serve(rig, [proto.frame(runs)])
    messages = [m for frame in frames for m in frame]
    cancelled = sorted(m.job for m in messages if isinstance(m, proto.Cancelled))
    done = sorted(m.job for m in messages if isinstance(m, proto.Done))
    assert cancelled == [0, 2, 4, 6]
    assert done == [1, 3, 5, 7]
    assert all(not m.started for m in messages if isinstance(m, proto.Cancelled))
    assert len([f for f in frames if f]) == 1


class _HeardCounter:
    """What ``Worker._on_bell`` asks of its watchdog: a step, and a count of rings."""

    step = 0.05

    def __init__(self) -> None:
        self.bells = 0

    def heard_bell(self) -> None:
        self.bells += 1


def test_a_frame_that_carries_bell_heard_cancels_its_timer() -> None:
    # A ring arms a timer to say BellHeard alone; when a frame has said it first, the
    # timer must go, or every cancellation wakes the idle loop once more, for nothing.
    with _rig(2) as rig:
        worker = Worker(rig.table, rig.bell, rig.inbox_r, rig.outbox_w, os.getpid())
        watchdog = _HeardCounter()
        worker.watchdog = watchdog  # type: ignore[assignment]

        async def main() -> list[asyncio.TimerHandle]:
            loop = worker.loop = asyncio.get_running_loop()
            worker.thread_id = threading.get_ident()
            worker.out_fd = rig.outbox_w.fileno()
            rig.bell.ring()
            worker._on_bell()
            assert watchdog.bells == 1
            assert worker.bell_heard
            worker._flush()  # the next frame: it carries the BellHeard
            return [h for h in getattr(loop, "_scheduled") if not h.cancelled()]  # noqa: B009

        live_timers = asyncio.run(main())
        assert live_timers == []
        frames = proto.FrameReader().feed(os.read(rig.outbox_r.fileno(), 1 << 16))
    messages = [m for frame in frames for m in proto.from_worker_decoder.decode(frame)]
    assert messages == [proto.BellHeard(1)]

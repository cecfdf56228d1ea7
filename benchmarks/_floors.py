"""Physical floors, measured in the same run as everything they are compared with.

One probe process per floor; the harness (sender) and the probe talk over two pipes::

    harness ──(8-byte perf_counter_ns timestamp)──▶ probe   (the path being measured)
    harness ◀──(8-byte one-way delta, ns)────────── probe   (the answer, not timed)

The sender writes its timestamp, the probe takes its own as soon as its code runs and
sends back ``now - sent``; both read ``CLOCK_MONOTONIC`` (see ``_common``), so this is a
true one-way time, not half a round trip. Between sends the harness sleeps 1-2 ms so the
probe is really asleep (blocked in ``read``/``epoll``) when the byte arrives.

Probes:
    pipe     the probe blocks in ``os.read``.
    echo     the probe blocks in ``os.read`` and writes the timestamp straight back; the
             harness, blocked in its own read, takes the time the answer arrives: a
             round trip between two sleeping processes with no work at either end,
             the floor under any pool's "one job, submit -> result".
    reader   an idle event loop (asyncio or uvloop) with ``loop.add_reader`` on the pipe;
             the timestamp is taken first thing in the callback.
    cancel   anyio on asyncio or uvloop: a task awaits ``anyio.sleep(100)`` inside a
             ``CancelScope``; the reader callback reads the byte and calls
             ``scope.cancel()``; the timestamp is taken when the task is running again,
             right after the scope has absorbed the cancellation.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import struct
import time
from multiprocessing.connection import Connection

from _common import (
    FLOOR_CANCEL_ASYNCIO,
    FLOOR_CANCEL_UVLOOP,
    FLOOR_ECHO,
    FLOOR_PIPE,
    FLOOR_READER_ASYNCIO,
    FLOOR_READER_UVLOOP,
    LATENCY,
    ONE_WAY,
    BenchArgs,
    Row,
    now_ns,
    require_shared_clock,
    stat_rows,
)

_WORD = struct.Struct("q")
_READY = -1
# Samples discarded at the start: first-touch page faults and lazy imports in the probe.
_WARMUP = 10
# Gap between sends. Long enough for the probe to be back asleep in the kernel (a probe
# still spinning would flatter the floor), short enough to keep 300 samples under a second.
_GAP_S = (0.001, 0.002)
# Backstop for one answer from the probe; a healthy probe answers in microseconds.
_ANSWER_TIMEOUT_S = 20.0


def _read_word(fd: int) -> int:
    data = b""
    while len(data) < _WORD.size:
        chunk = os.read(fd, _WORD.size - len(data))
        if not chunk:
            raise EOFError("peer closed the pipe")
        data += chunk
    return int(_WORD.unpack(data)[0])


def _write_word(fd: int, value: int) -> None:
    os.write(fd, _WORD.pack(value))


# ----------------------------------------------------------------------------- probes


def _probe_pipe(rx: int, tx: int, n: int) -> None:
    _write_word(tx, _READY)
    for _ in range(n):
        data = os.read(rx, _WORD.size)
        t = now_ns()
        _write_word(tx, t - _WORD.unpack(data)[0])


def _probe_echo(rx: int, tx: int, n: int) -> None:
    _write_word(tx, _READY)
    for _ in range(n):
        os.write(tx, os.read(rx, _WORD.size))


def _probe_reader(rx: int, tx: int, n: int, use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    done = loop.create_future()
    count = 0

    def on_readable() -> None:
        nonlocal count
        t = now_ns()
        sent = _WORD.unpack(os.read(rx, _WORD.size))[0]
        _write_word(tx, t - sent)
        count += 1
        if count == n:
            loop.remove_reader(rx)
            done.set_result(None)

    loop.add_reader(rx, on_readable)
    _write_word(tx, _READY)
    try:
        loop.run_until_complete(done)
    finally:
        loop.close()


def _probe_cancel(rx: int, tx: int, n: int, use_uvloop: bool) -> None:
    import anyio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        current: list[anyio.CancelScope] = []
        sent = 0

        def on_readable() -> None:
            nonlocal sent
            sent = _WORD.unpack(os.read(rx, _WORD.size))[0]
            current[0].cancel()

        loop.add_reader(rx, on_readable)
        try:
            for i in range(n):
                with anyio.CancelScope() as scope:
                    current[:] = [scope]
                    if i == 0:
                        _write_word(tx, _READY)
                    await anyio.sleep(100)
                t = now_ns()
                if not scope.cancelled_caught:
                    raise RuntimeError("the sleep ended without being cancelled")
                _write_word(tx, t - sent)
        finally:
            loop.remove_reader(rx)

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": use_uvloop})


def _probe_main(kind: str, rx_conn: Connection, tx_conn: Connection, n: int) -> None:
    rx, tx = rx_conn.fileno(), tx_conn.fileno()
    if kind == "pipe":
        _probe_pipe(rx, tx, n)
    elif kind == "echo":
        _probe_echo(rx, tx, n)
    elif kind.startswith("reader-"):
        _probe_reader(rx, tx, n, use_uvloop=kind == "reader-uvloop")
    elif kind.startswith("cancel-"):
        _probe_cancel(rx, tx, n, use_uvloop=kind == "cancel-uvloop")
    else:
        raise ValueError(kind)


# ---------------------------------------------------------------------------- harness


def one_way_samples(kind: str, n: int) -> list[int]:
    """Run probe *kind* in a fresh process and return *n* one-way times in ns (for
    ``echo``, round-trip times)."""
    # spawn: the probe starts from a clean interpreter whatever threads the harness has.
    ctx = mp.get_context("spawn")
    probe_rx, harness_tx = ctx.Pipe(duplex=False)
    harness_rx, probe_tx = ctx.Pipe(duplex=False)
    total = n + _WARMUP
    proc = ctx.Process(
        target=_probe_main, args=(kind, probe_rx, probe_tx, total), name=f"floor-{kind}"
    )
    proc.start()
    probe_rx.close()
    probe_tx.close()
    rx, tx = harness_rx.fileno(), harness_tx.fileno()
    samples: list[int] = []
    try:
        if not harness_rx.poll(_ANSWER_TIMEOUT_S) or _read_word(rx) != _READY:
            raise RuntimeError(f"floor probe {kind!r} did not start")
        for _ in range(total):
            time.sleep(random.uniform(*_GAP_S))
            sent = now_ns()
            _write_word(tx, sent)
            if not harness_rx.poll(_ANSWER_TIMEOUT_S):
                raise RuntimeError(f"floor probe {kind!r} stopped answering")
            answer = _read_word(rx)
            samples.append(now_ns() - sent if kind == "echo" else answer)
        proc.join(_ANSWER_TIMEOUT_S)
    finally:
        harness_rx.close()
        harness_tx.close()
        if proc.is_alive():
            proc.kill()
            proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"floor probe {kind!r} exited with {proc.exitcode}")
    return samples[_WARMUP:]


_FLOORS = (
    ("pipe", FLOOR_PIPE),
    ("reader-asyncio", FLOOR_READER_ASYNCIO),
    ("reader-uvloop", FLOOR_READER_UVLOOP),
    ("cancel-asyncio", FLOOR_CANCEL_ASYNCIO),
    ("cancel-uvloop", FLOOR_CANCEL_UVLOOP),
)


def floor_rows(args: BenchArgs) -> list[Row]:
    """``one-way p50`` / ``one-way p99`` for each floor, each against the bare pipe."""
    require_shared_clock()
    n = args.count(300, 60)
    rows: list[Row] = []
    for kind, subject in _FLOORS:
        if "uvloop" in kind:
            try:
                import uvloop  # noqa: F401
            except ImportError:
                print(f"floors: {subject} skipped (uvloop not installed)")
                continue
        ref = None if kind == "pipe" else FLOOR_PIPE
        rows += stat_rows(ONE_WAY, subject, one_way_samples(kind, n), ref_subject=ref)
    rows += stat_rows(LATENCY, FLOOR_ECHO, one_way_samples("echo", n), stats=("p50", "p90"))
    if args.wants("timeout"):
        from _timeout_floor import timeout_floor_rows

        rows += timeout_floor_rows(args)
    return rows

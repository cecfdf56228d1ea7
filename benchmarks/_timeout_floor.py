"""The floor of timeout lateness: the path a job's timeout takes, without any pool.

    probe process                     this process
    -------------                     ------------------------------------------------
    asyncio loop, idle                a poller thread blocked in poll() on pipe B
    "go" on pipe A -> t0, call_later  the main thread blocked in Future.result()
      (0.2 s) -> write t0 to pipe B -> poller wakes, reads t0, sets the Future
                                      -> main thread wakes: lateness = now - t0 - 0.2 s

Every party is idle for the 0.2 s, as a worker, the supervisor thread and the caller
are while a job waits for its timeout: the figure includes the timer's granularity
(asyncio's selector waits whole milliseconds, rounded up) and the cost of waking three
idle threads on a VM. A pool's timeout lateness cannot go below it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing as mp
import os
import select
import struct
import threading
from multiprocessing.connection import Connection

from _common import FLOOR_TIMEOUT, TIMEOUT_LATE, BenchArgs, Row, now_ns, stat_rows

_WORD = struct.Struct("q")
_TIMEOUT_S = 0.2
_BACKSTOP_S = 10.0


def _probe(go_conn: Connection, done_conn: Connection) -> None:
    go, done = go_conn.fileno(), done_conn.fileno()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def fire(t0: int) -> None:
            os.write(done, _WORD.pack(t0))

        def on_go() -> None:
            data = os.read(go, 1)
            if not data or data == b"q":
                finished.set_result(None)
                return
            loop.call_later(_TIMEOUT_S, fire, now_ns())

        loop.add_reader(go, on_go)
        await finished

    asyncio.run(main())


def timeout_floor_samples(n: int) -> list[int]:
    """Lateness samples (ns) of ``n`` timer -> pipe -> thread -> waiter rounds."""
    ctx = mp.get_context("spawn")
    go_r, go_w = ctx.Pipe(duplex=False)
    done_r, done_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_probe, args=(go_r, done_w), daemon=True)
    proc.start()
    go_r.close()
    done_w.close()
    samples: list[int] = []
    try:
        for _ in range(n + 1):  # the first round warms the probe up
            future: cf.Future[int] = cf.Future()

            def poller(fut: cf.Future[int] = future) -> None:
                poll = select.poll()
                poll.register(done_r.fileno(), select.POLLIN)
                if poll.poll(_BACKSTOP_S * 1000):
                    fut.set_result(_WORD.unpack(os.read(done_r.fileno(), _WORD.size))[0])
                else:
                    fut.set_exception(TimeoutError("the timer probe never fired"))

            thread = threading.Thread(target=poller, daemon=True)
            thread.start()
            os.write(go_w.fileno(), b"g")
            t0 = future.result(_BACKSTOP_S + 1)
            samples.append(now_ns() - t0 - int(_TIMEOUT_S * 1e9))
            thread.join()
    finally:
        os.write(go_w.fileno(), b"q")
        proc.join(_BACKSTOP_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
        go_w.close()
        done_r.close()
    return samples[1:]


def timeout_floor_rows(args: BenchArgs) -> list[Row]:
    samples = timeout_floor_samples(args.count(30, 5))
    return stat_rows(TIMEOUT_LATE, FLOOR_TIMEOUT, samples, ("p50", "p99"), note="3 idle parties")

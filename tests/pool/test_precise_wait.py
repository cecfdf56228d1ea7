"""The worker's asyncio selector: timed waits to the microsecond, not a rounded epoll wait.

What is checked here is behaviour (timers in order and never early, every ready fd
reported, a timed wait never short); how close to on time a timer fires is measured in
``benchmarks/`` (timeout lateness), never asserted.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import time
from collections.abc import Callable

import pytest

from cancelpool import CancelPool
from cancelpool._pool._precise_wait import PreciseEpollSelector, new_event_loop

from . import _jobs

#: Backstop for waits that should end in milliseconds.
_BACKSTOP = 30.0


def _run(main: Callable[[], object]) -> object:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())  # type: ignore[arg-type]


def test_the_loop_runs_on_the_precise_selector() -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()._selector).__name__  # type: ignore[attr-defined]

    assert _run(main) == "PreciseEpollSelector"


def test_timers_fire_in_order_and_never_early() -> None:
    async def main() -> list[tuple[int, float, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[int, float, float]] = []
        done = loop.create_future()
        delays = [0.0003 + 0.0013 * k for k in range(12)]
        for k, delay in enumerate(delays):
            when = loop.time() + delay
            loop.call_at(when, lambda k=k, when=when: fired.append((k, when, loop.time())))
        loop.call_at(loop.time() + delays[-1] + 0.001, done.set_result, None)
        await asyncio.wait_for(done, _BACKSTOP)
        return fired

    fired = _run(main)
    assert isinstance(fired, list)
    assert [k for k, _, _ in fired] == list(range(12))
    assert all(now >= when for _, when, now in fired)


def test_readers_and_timers_share_the_loop() -> None:
    async def main() -> tuple[bytes, bool]:
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        try:
            got = loop.create_future()
            loop.add_reader(left.fileno(), lambda: got.set_result(left.recv(16)))
            loop.call_later(0.002, right.send, b"ping")
            data = await asyncio.wait_for(got, _BACKSTOP)
            loop.remove_reader(left.fileno())
            slept = loop.time()
            await asyncio.sleep(0.003)
            return data, loop.time() - slept >= 0.003
        finally:
            left.close()
            right.close()

    assert _run(main) == (b"ping", True)


def test_every_ready_fd_is_reported_and_timed_waits_are_never_short() -> None:
    pairs = [socket.socketpair() for _ in range(8)]
    selector = PreciseEpollSelector()
    try:
        for left, right in pairs:
            selector.register(left, selectors.EVENT_READ)
            right.send(b"x")
        ready = selector.select(_BACKSTOP)  # ends at once: they are ready
        assert sorted(key.fd for key, _ in ready) == sorted(left.fileno() for left, _ in pairs)
        assert all(events == selectors.EVENT_READ for _, events in ready)
        for left, _ in pairs:
            left.recv(16)
        assert selector.select(0) == []
        # Nothing ready: the whole milliseconds are waited in epoll (the loop asks
        # again for the rest), a fraction of one in select(); never less.
        for timeout, at_least in ((0.0025, 0.002), (0.0134, 0.013), (0.0004, 0.0004)):
            started = time.monotonic()
            assert selector.select(timeout) == []
            assert time.monotonic() - started >= at_least
    finally:
        selector.close()
        for left, right in pairs:
            left.close()
            right.close()


def test_asyncio_workers_run_on_it(make_pool: Callable[..., CancelPool]) -> None:
    pool = make_pool(use_uvloop=False)
    assert pool.submit(_jobs.loop_kind).result(_BACKSTOP) == (
        "_UnixSelectorEventLoop",
        "PreciseEpollSelector",
    )


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_jobs_find_their_async_library_without_asking_the_loop(
    make_pool: Callable[..., CancelPool], use_uvloop: bool
) -> None:
    # The worker declares asyncio to sniffio once (anyio asks sniffio on every call a
    # job makes); the tasks a job starts inherit it.
    pytest.importorskip("sniffio")
    if use_uvloop:
        pytest.importorskip("uvloop")
    pool = make_pool(use_uvloop=use_uvloop)
    assert pool.submit(_jobs.declared_library, False).result(_BACKSTOP) == "asyncio"
    assert pool.submit(_jobs.declared_library, True).result(_BACKSTOP) == "asyncio"

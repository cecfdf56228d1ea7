"""Plain ``Future`` objects in each state, made through Future's public API.

CPython's tests build them by setting ``Future._state``; the same states are reached
here with ``cancel()``, ``set_running_or_notify_cancel()``, ``set_result()`` and
``set_exception()``. Each call makes new ones, so no test sees another's waiters.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any


def pending() -> Future[Any]:
    return Future()


def running() -> Future[Any]:
    future: Future[Any] = Future()
    assert future.set_running_or_notify_cancel()
    return future


def cancelled() -> Future[Any]:
    future: Future[Any] = Future()
    assert future.cancel()
    return future


def cancelled_and_notified() -> Future[Any]:
    future = cancelled()
    assert not future.set_running_or_notify_cancel()
    return future


def failed() -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(OSError())
    return future


def succeeded(result: Any = 42) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(result)
    return future

"""A subscriber that keeps every event, and lets a test wait for the one it needs (the
events arrive on the supervisor thread: a condition, not polling)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from _handshake import BACKSTOP

E = TypeVar("E")


class Collector:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.threads: set[str] = set()
        self._changed = threading.Condition()

    def __call__(self, event: Any) -> None:
        with self._changed:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    def of(self, kind: type[E], where: Callable[[E], bool] = lambda e: True) -> list[E]:
        with self._changed:
            return [e for e in self.events if isinstance(e, kind) and where(e)]

    def wait_for(
        self, kind: type[E], where: Callable[[E], bool] = lambda e: True, count: int = 1
    ) -> list[E]:
        """The first ``count`` events of ``kind`` that satisfy ``where`` (waits, with a
        backstop)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.of(kind, where)) >= count, BACKSTOP):
                raise AssertionError(
                    f"no {count} {kind.__name__} within {BACKSTOP}s (backstop); got "
                    f"{[type(e).__name__ for e in self.events]}"
                )
            return self.of(kind, where)[:count]

    def kinds_of_job(self, job_id: int) -> list[str]:
        with self._changed:
            return [type(e).__name__ for e in self.events if getattr(e, "job_id", None) == job_id]

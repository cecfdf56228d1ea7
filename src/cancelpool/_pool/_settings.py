"""``PoolSettings``: every option of a :class:`CancelPool`, checked once, then frozen.

The pool's objects (the supervisor, the worker set, the job table) read their options
from one ``PoolSettings``; none of them checks an option again, and none can change one
while the pool runs.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core import _validate

#: Jobs one worker runs at once by default. Async jobs are cheap (a task each); higher
#: means fewer jobs wait in the supervisor's queue, lower means fairer spreading of
#: long jobs over workers.
DEFAULT_CONCURRENCY = 256
#: Seconds a running job may ignore its cancellation before its worker is killed.
#: Shorter stops stubborn jobs sooner; longer gives cleanup code (finally blocks,
#: partial results) more room.
DEFAULT_CANCEL_GRACE = 5.0
#: Seconds a worker's event loop may go without turning before its watchdog reports
#: the job holding it (log, statistics, handle). No ordinary loop callback takes this
#: long: unpickling a job's arguments or a result takes milliseconds. Shorter reports
#: brief stalls as blocks (noise in the log); longer reports real ones later. A
#: cancellation that the loop does not hear reports the block sooner (0.1 s).
DEFAULT_LOOP_BLOCK_THRESHOLD = 1.0
#: Finished jobs remembered for ``get()`` / ``jobs()``.
DEFAULT_HISTORY = 1000
#: Token-table slots beyond ``workers * concurrency``: room for child jobs and for the
#: slots of jobs whose end has not been read yet. Each slot is a few dozen bytes.
EXTRA_SLOTS = 64


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The options of one pool, validated (see :class:`CancelPool` for their meaning)."""

    workers: int
    concurrency: int
    context: multiprocessing.context.BaseContext
    start_method: str
    capacity: int
    cancel_grace: float
    max_tasks_per_child: int | None
    max_memory_per_worker: int | None
    spare_workers: int
    history: int
    use_uvloop: bool
    #: ``pickle.dumps((initializer, initargs))``, or None: run once in each worker.
    initializer: bytes | None
    initializer_label: str | None
    initializer_is_async: bool
    #: Jobs ``map()`` keeps submitted ahead of the one being consumed, by default.
    map_read_ahead: int
    cancel_at_exit: bool
    #: Seconds without a turn of a worker's loop before it is reported; None: never.
    loop_block_threshold: float | None = DEFAULT_LOOP_BLOCK_THRESHOLD

    @classmethod
    def build(
        cls,
        *,
        workers: int | None,
        max_workers: int | None,
        concurrency: int,
        start_method: str | None,
        mp_context: multiprocessing.context.BaseContext | None,
        capacity: int | None,
        cancel_grace: float,
        max_tasks_per_child: int | None,
        max_memory_per_worker: int | None,
        spare_workers: int,
        history: int,
        use_uvloop: bool,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        map_read_ahead: int | None,
        cancel_at_exit: bool,
        loop_block_threshold: float | None = DEFAULT_LOOP_BLOCK_THRESHOLD,
    ) -> PoolSettings:
        """Check every option; raise TypeError/ValueError with a sentence if one is bad."""
        if workers is not None and max_workers is not None:
            raise TypeError(
                "pass workers= or its concurrent.futures spelling max_workers=, not both"
            )
        # The error names the spelling the caller used.
        spelling = "max_workers" if max_workers is not None else "workers"
        count = workers if workers is not None else max_workers
        count = _validate.count(os.cpu_count() or 1 if count is None else count, spelling, 1)
        concurrency = _validate.count(concurrency, "concurrency", 1)
        context = _context(start_method, mp_context)
        capacity = _validate.count(
            count * concurrency + EXTRA_SLOTS if capacity is None else capacity, "capacity", 1
        )
        if not isinstance(use_uvloop, bool):
            raise TypeError(f"use_uvloop must be True or False, not {use_uvloop!r}")
        if not isinstance(cancel_at_exit, bool):
            raise TypeError(f"cancel_at_exit must be True or False, not {cancel_at_exit!r}")
        init_data, label, init_async = _initializer(initializer, initargs)
        read_ahead = _validate.count(
            count * concurrency if map_read_ahead is None else map_read_ahead,
            "map_read_ahead",
            1,
        )
        return cls(
            workers=count,
            concurrency=concurrency,
            context=context,
            start_method=context.get_start_method(),
            capacity=capacity,
            cancel_grace=_validate.seconds(cancel_grace, "cancel_grace"),
            max_tasks_per_child=_validate.optional_count(
                max_tasks_per_child, "max_tasks_per_child", 1
            ),
            max_memory_per_worker=_validate.optional_count(
                max_memory_per_worker, "max_memory_per_worker", 1
            ),
            spare_workers=_validate.count(spare_workers, "spare_workers", 0),
            history=_validate.count(history, "history", 0),
            use_uvloop=use_uvloop,
            initializer=init_data,
            initializer_label=label,
            initializer_is_async=init_async,
            map_read_ahead=read_ahead,
            cancel_at_exit=cancel_at_exit,
            loop_block_threshold=_validate.optional_seconds(
                loop_block_threshold, "loop_block_threshold", positive=True
            ),
        )


def _context(
    start_method: str | None, mp_context: multiprocessing.context.BaseContext | None
) -> multiprocessing.context.BaseContext:
    if mp_context is not None:
        if start_method is not None:
            raise TypeError("pass start_method= or mp_context=, not both")
        if not isinstance(mp_context, multiprocessing.context.BaseContext):
            raise TypeError(
                "mp_context must be a multiprocessing context such as "
                f"multiprocessing.get_context('spawn'), not {mp_context!r}"
            )
        return mp_context
    methods = multiprocessing.get_all_start_methods()
    if start_method is None:
        start_method = "forkserver" if "forkserver" in methods else "spawn"
    if start_method not in methods:
        raise ValueError(f"start_method must be one of {methods}, not {start_method!r}")
    return multiprocessing.get_context(start_method)


def _initializer(
    initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> tuple[bytes | None, str | None, bool]:
    if not isinstance(initargs, tuple):
        raise TypeError(f"initargs must be a tuple, not {type(initargs).__name__}")
    if initializer is None:
        if initargs:
            raise TypeError("initargs= was given without an initializer=")
        return None, None, False
    if not callable(initializer):
        raise TypeError(f"initializer must be callable, not {initializer!r}")
    label = getattr(initializer, "__qualname__", None) or repr(initializer)
    try:
        data = pickle.dumps((initializer, initargs), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"Cannot use {label} as the initializer: it and its initargs must pickle "
            f"(an importable module-level function and plain data; pickle failed: {exc})"
        ) from None
    return data, label, _validate.is_async_callable(initializer)

"""Queued plain (sync) functions: they run alone in a worker, in a thread, as in the pool.

An async task shares its worker's event loop with other jobs (``_task.run_task``). A
plain function submitted the same way would run in a thread of that loop, so a job that
blocks the loop would delay its cancellation and get it force-stopped for another job's
fault. The server therefore looks at the task once (after the allow-list check, in its
own process) and submits plain ones as :func:`run_plain_task`, a plain function, which
the pool runs alone in a worker thread: its token is checked with
``current_operation().token.check()`` and its outcome reported without waiting for any
other job.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from ._exceptions import InvalidJob
from ._model import MAX_RESULT_BYTES, encode_json
from ._task import load_task


def is_plain_task(task: str, allow: Sequence[str]) -> bool:
    """True if ``task`` is a plain function; False for an async one, and for one that
    cannot be loaded (the worker then fails the job with the loader's own error)."""
    try:
        fn = load_task(task, allow)
    except InvalidJob:
        return False
    return not (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    )


def run_plain_task(task: str, args: list[Any], kwargs: dict[str, Any], allow: Sequence[str]) -> str:
    """Run one queued plain function in this worker thread; returns its result as JSON.

    Cancellation: the function stops where it calls ``current_operation().token.check()``;
    one that never checks is force-stopped (its worker killed) after the server's
    ``--cancel-grace``, keeping the last partial result it checkpointed.
    """
    fn = load_task(task, allow)
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise InvalidJob(f"task {task!r} returned an awaitable; make it an async function")
    return encode_json(result, f"the result of task {task!r}", MAX_RESULT_BYTES)

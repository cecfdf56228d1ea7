"""The function every queued job runs as, inside a pool worker.

The server never imports user tasks itself: it sends this function with the task's
import path and JSON-decoded arguments; the worker checks the allow-list again, imports
the task, runs it inside the job's ``Cancelable`` and returns the result already encoded
as JSON, so a result that is not JSON data fails the job with a clear message.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .._core._cancelable import current_operation
from ._exceptions import InvalidJob, TaskNotAllowed
from ._model import MAX_RESULT_BYTES, encode_json, task_allowed


def load_task(task: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (a dotted attribute path after the colon)."""
    module_name, _, attr = task.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidJob(f"task {task!r}: cannot import module {module_name!r} ({exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidJob(f"task {task!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise InvalidJob(f"task {task!r} is not callable ({type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


async def run_task(task: str, args: list[Any], kwargs: dict[str, Any], allow: Sequence[str]) -> str:
    """Run one queued job; returns its result as JSON text.

    Cancellation: an async task is cancelled at its next ``await``; a plain function
    runs in a thread and should poll ``current_operation().token.check()``.
    """
    if not task_allowed(task, allow):
        raise TaskNotAllowed(f"task {task!r} matches none of the server's --allow patterns")
    fn = load_task(task)
    if inspect.iscoroutinefunction(fn):
        result = await fn(*args, **kwargs)
    else:
        op = current_operation()
        if op is None:  # pragma: no cover - always inside the job's Cancelable
            result = fn(*args, **kwargs)
        else:
            result = await op.run_in_thread(fn, *args, **kwargs)
    return encode_json(result, f"the result of task {task!r}", MAX_RESULT_BYTES)

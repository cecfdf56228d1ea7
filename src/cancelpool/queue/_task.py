"""The function every queued job runs as, inside a pool worker.

The server never imports user tasks itself: it sends this function with the task's
reference and JSON-decoded arguments; the worker checks the allow-list again on the
reference alone, only then imports the module, checks that the name is one of its own
public functions, runs it inside the job's ``Cancelable`` and returns the result already
encoded as JSON, so a result that is not JSON data fails the job with a clear message.

What a name may resolve to: a plain or async function (``def`` / ``async def``) whose
``__module__`` is the named module, read from the module's own namespace (no
``__getattr__`` hook, no attribute chain). A module that wants to offer something else
(a function imported from elsewhere, a ``functools.partial``, a callable object) lists
its name in ``__cancelpool_tasks__``, a list or tuple of strings.
"""

from __future__ import annotations

import importlib
import inspect
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._core._cancelable import current_operation
from .._core._validate import is_async_callable
from ._exceptions import InvalidJob, QueueError, QueueFileError, TaskNotAllowed
from ._model import MAX_RESULT_BYTES, encode_json
from ._taskref import parse_task_ref, ref_allowed

#: The module attribute that lists extra task names (re-exports, other callables).
EXPORTS_NAME = "__cancelpool_tasks__"


def load_task(task: str, allow: Sequence[str]) -> Callable[..., Any]:
    """Resolve the reference ``package.module:function`` to the function it names.

    The reference is parsed and matched against ``allow`` before the module is imported,
    so a module no pattern admits never runs its import-time code.

    Raises:
        InvalidJob: a malformed reference, an unimportable module, a missing name, or a
            name that is not one of the module's own functions (nor exported).
        TaskNotAllowed: no ``allow`` pattern admits the reference.
    """
    ref = parse_task_ref(task)
    if not ref_allowed(ref, allow):
        raise TaskNotAllowed(f"task {task!r} matches none of the server's --allow patterns")
    try:
        module = importlib.import_module(ref.module)
    except ImportError as exc:
        raise InvalidJob(f"task {task!r}: cannot import module {ref.module!r} ({exc})") from None
    namespace = vars(module)
    if ref.function not in namespace:
        raise InvalidJob(f"task {task!r}: module {ref.module!r} has no {ref.function!r}")
    obj = namespace[ref.function]
    exports = namespace.get(EXPORTS_NAME)
    if isinstance(exports, (list, tuple)) and ref.function in exports:
        if not callable(obj):
            raise InvalidJob(f"task {task!r} is not callable ({type(obj).__name__})")
        return obj  # type: ignore[no-any-return]
    if not inspect.isfunction(obj):
        raise InvalidJob(
            f"task {task!r} is not callable as a task: it is a {type(obj).__name__}, not a "
            f"function defined in {ref.module!r} (list other callables in {EXPORTS_NAME})"
        )
    if getattr(obj, "__module__", None) != ref.module:
        raise InvalidJob(
            f"task {task!r} is a function of {obj.__module__!r} imported into "
            f"{ref.module!r}; only the module's own functions are tasks unless it lists "
            f"the name in {EXPORTS_NAME}"
        )
    return obj


def set_server_import_path(extra: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Make ``sys.path`` the environment's path plus ``extra``, without the working dir.

    ``python -m`` and ``-c`` put the working directory (or ``''``) first on ``sys.path``;
    a server started from a shared folder would then import code other users put there.
    This removes that entry, puts the ``--path`` directories first, and sets
    ``PYTHONSAFEPATH=1`` so the worker processes (the fork server starts with ``-c``)
    do not add their working directory either, before they take this path over.
    Job subprocesses inherit that variable.

    Raises:
        QueueFileError: an ``extra`` directory is missing, not a directory, or writable
            by others (they could put modules there).

    Returns the new ``sys.path``.
    """
    dirs: list[str] = []
    for entry in extra:
        path = Path(entry).expanduser().absolute()
        try:
            info = os.stat(path)
        except OSError as exc:
            raise QueueFileError(f"--path {entry}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise QueueFileError(f"--path {entry} is not a directory")
        if info.st_mode & 0o022 or info.st_uid not in (os.getuid(), 0):
            raise QueueFileError(
                f"--path {entry} can be written by other users, who could put the code the "
                f"server runs there; run `chmod go-w {path}` or use a directory of your own"
            )
        dirs.append(str(path))
    if not sys.flags.safe_path and sys.path:
        first = sys.path[0]
        if first == "" or os.path.realpath(first) == os.path.realpath(os.getcwd()):
            del sys.path[0]  # the entry the interpreter added, not the environment's
    sys.path[:0] = [d for d in dirs if d not in sys.path]
    os.environ["PYTHONSAFEPATH"] = "1"
    return list(sys.path)


async def run_task(task: str, args: list[Any], kwargs: dict[str, Any], allow: Sequence[str]) -> str:
    """Run one queued job; returns its result as JSON text.

    Cancellation: an async task is cancelled at its next ``await``; a plain function
    runs in a thread and should poll ``current_operation().token.check()``.
    """
    try:
        fn = load_task(task, allow)
    except QueueError as exc:
        raise _refusal(exc) from None
    if is_async_callable(fn):  # the one test of "is this async" (core, pool, queue)
        result = await fn(*args, **kwargs)
    else:
        op = current_operation()
        if op is None:  # pragma: no cover - always inside the job's Cancelable
            result = fn(*args, **kwargs)
        else:
            result = await op.run_in_thread(fn, *args, **kwargs)
    try:
        return encode_json(result, f"the result of task {task!r}", MAX_RESULT_BYTES)
    except QueueError as exc:
        raise _refusal(exc) from None


#: Set on an error the queue raised about a job (its task cannot be loaded, its result
#: cannot be stored), not the job's code: its traceback, all frames of cancelpool's own,
#: is not worth showing the user. An attribute, so it survives pickling to the server.
REFUSAL = "cancelpool_refusal"


def _refusal(exc: QueueError) -> QueueError:
    setattr(exc, REFUSAL, True)
    return exc

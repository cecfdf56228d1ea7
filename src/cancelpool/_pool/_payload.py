"""The Python objects inside the messages: pickled one way, unpickled the other.

Functions, arguments, results, exceptions and partial results travel as pickles inside
the msgspec messages of ``_protocol``. Both directions fail softly where a job's outcome
must still get through: an exception that does not pickle becomes a RuntimeError that
describes it, a partial result that does not becomes a description of the problem.
"""

from __future__ import annotations

import pickle
from typing import Any

from .._core._exceptions import PoolError
from ._protocol import MAX_PAYLOAD

# Set on a BaseException that is not an Exception (SystemExit from a __reduce__) when
# :func:`dumps` hit it: pickling the job's own data, in the job's process, so it is the
# job's to raise (as concurrent.futures does) and :func:`rewrap` keeps its type.
_WHILE_PICKLING = "_cancelpool_raised_while_pickling"


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for one message, or raise ValueError if it is too large."""
    try:
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception:
        raise
    except BaseException as problem:
        try:
            setattr(problem, _WHILE_PICKLING, True)
        except Exception:  # a type with __slots__: it is contained like the others
            pass
        raise
    if len(data) > MAX_PAYLOAD:
        raise ValueError(
            f"{type(obj).__name__} is too large to send ({len(data):,} bytes pickled, "
            f"the limit is {MAX_PAYLOAD:,}); return a file path or another "
            "reference to the data instead"
        )
    return data


def rewrap(problem: BaseException, message: str) -> BaseException:
    """An exception of ``problem``'s own type saying ``message``, chained to ``problem``.

    A pickle failure keeps its type (``PicklingError`` stays one, a lock's ``TypeError``
    stays a ``TypeError``) while saying which job and what to do. A type that cannot be
    built from one message is returned as it is. A ``BaseException`` that is not an
    ``Exception`` keeps its type when :func:`dumps` met it pickling a job's result in
    the job's own process (``SystemExit`` from the result's ``__reduce__`` is what the
    caller's ``result()`` raises, as in ``concurrent.futures``); met while unpickling
    another process's data it becomes a ``PoolError``: the problem belongs to one
    job's data, it must not stop the process that reads it.
    """
    own = isinstance(problem, Exception) or getattr(problem, _WHILE_PICKLING, False)
    kind = type(problem) if own else PoolError
    try:
        error: BaseException = kind(message)
    except Exception:
        error = problem
    if error is not problem:
        error.__cause__ = problem
    return error


def dump_error(exc: BaseException) -> bytes:
    """Pickle an exception so that it unpickles; else a RuntimeError that describes it."""
    try:
        data = dumps(exc)
        pickle.loads(data)
    except BaseException as problem:  # SystemExit from a __reduce__ included
        return dumps(
            RuntimeError(
                f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} "
                f"(the original exception could not be pickled: {problem!r})"
            )
        )
    return data


def dump_partial(partial: Any) -> bytes | None:
    """Pickle a partial result (None stays None; a failure becomes its description)."""
    if partial is None:
        return None
    try:
        return dumps(partial)
    except BaseException as problem:
        return dumps(f"<partial result could not be pickled: {problem!r}>")


def load_partial(data: bytes | None) -> Any:
    """Unpickle a partial result (a description of the problem if that fails)."""
    if data is None:
        return None
    try:
        return pickle.loads(data)
    except BaseException as exc:
        return f"<partial result could not be unpickled: {exc!r}>"


class _RemoteTraceback(Exception):
    """Carries a worker's traceback text; set as ``__cause__`` of a job's exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.tb = text

    def __str__(self) -> str:
        return f"\n\n--- traceback in the worker process ---\n{self.tb}"


def load_error(data: bytes, traceback_text: str, job_id: int) -> BaseException:
    """Unpickle a job's exception and hang the worker's traceback on it."""
    try:
        error: BaseException = pickle.loads(data)
    except BaseException as exc:  # SystemExit from a __setstate__ included
        error = rewrap(
            exc, f"job {job_id} failed and its exception could not be unpickled: {exc!r}"
        )
    if traceback_text:
        error.__cause__ = _RemoteTraceback(traceback_text)
    return error


def fn_label(fn: Any) -> str:
    """How messages name a job function."""
    return getattr(fn, "__qualname__", None) or repr(fn)


def pickle_fn(fn: Any) -> bytes:
    """Pickle a job's function, or raise the pickle error's own type (chained) with a
    message that says what to do; TypeError if ``fn`` is not callable."""
    if not callable(fn):
        raise TypeError(f"Cannot submit {fn!r}: it is not callable")
    try:
        return pickle.dumps(fn, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        # The pickle error's own type (PicklingError, or the TypeError of a lock, the
        # AttributeError of a local function), chained, as concurrent.futures has it.
        error = rewrap(
            exc,
            f"Cannot submit {fn_label(fn)}: job functions must be importable "
            f"module-level functions (pickle failed: {exc})",
        )
        if error is exc:
            raise
        raise error from exc


def pickle_args(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a job's arguments, or raise the pickle error's own type (chained) with a
    message that says what to do; ValueError if they are too large."""
    try:
        data = pickle.dumps((args, kwargs), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        error = rewrap(
            exc,
            f"Cannot submit {fn_label(fn)}: its arguments cannot be pickled ({exc}); "
            "pass plain data or importable objects",
        )
        if error is exc:
            raise
        raise error from exc
    if len(data) > MAX_PAYLOAD:
        raise ValueError(
            f"Cannot submit {fn_label(fn)}: its arguments are too large ({len(data):,} "
            f"bytes pickled, the limit is {MAX_PAYLOAD:,}); pass a file path or "
            "another reference to the data instead"
        )
    return data

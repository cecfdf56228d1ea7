"""The Python objects inside the messages: pickled one way, unpickled the other.

Functions, arguments, results, exceptions and partial results travel as pickles inside
the msgspec messages of ``_protocol``. Both directions fail softly where a job's outcome
must still get through: an exception that does not pickle becomes a RuntimeError that
describes it, a partial result that does not becomes a description of the problem.
"""

from __future__ import annotations

import pickle
from typing import Any

from ._protocol import MAX_PAYLOAD


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for one message, or raise ValueError if it is too large."""
    data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_PAYLOAD:
        raise ValueError(
            f"{type(obj).__name__} is too large to send ({len(data):,} bytes pickled, "
            f"the limit is {MAX_PAYLOAD:,}); return a file path or another "
            "reference to the data instead"
        )
    return data


def dump_error(exc: BaseException) -> bytes:
    """Pickle an exception so that it unpickles; else a RuntimeError that describes it."""
    try:
        data = dumps(exc)
        pickle.loads(data)
    except Exception as problem:
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
    except Exception as problem:
        return dumps(f"<partial result could not be pickled: {problem!r}>")


def load_partial(data: bytes | None) -> Any:
    """Unpickle a partial result (a description of the problem if that fails)."""
    if data is None:
        return None
    try:
        return pickle.loads(data)
    except Exception as exc:
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
    except Exception as exc:
        error = RuntimeError(
            f"job {job_id} failed and its exception could not be unpickled: {exc!r}"
        )
    if traceback_text:
        error.__cause__ = _RemoteTraceback(traceback_text)
    return error

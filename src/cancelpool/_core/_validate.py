"""Argument checks shared by every layer: one rule per kind of value, one place.

The core, the pool and the queue all take "seconds" and "counts" from their users. Each
rule lives here once, so that a timeout means the same thing wherever it is passed:

- seconds: an int, a float or a :class:`datetime.timedelta`; finite and never negative.
  Zero is a valid *deadline* (it has already passed, as with ``anyio.fail_after(0)``);
  an *interval* or a *period* must be positive (``positive=True``).
- counts: an int (not a bool) at or above a minimum.
- names: text that encodes as UTF-8.

Every check raises ``TypeError`` for the wrong kind of value and ``ValueError`` for a
value out of range, with one sentence that names the parameter and says what to pass.
This module imports nothing of cancelpool: any layer may use it.
"""

from __future__ import annotations

import inspect
import math
from datetime import timedelta
from typing import Any

__all__ = ("count", "is_async_callable", "name", "optional_count", "optional_seconds", "seconds")


def seconds(
    value: float | timedelta, what: str, *, positive: bool = False, maximum: float | None = None
) -> float:
    """``value`` as a float of seconds, or raise.

    Args:
        value: an int, a float or a timedelta.
        what: the parameter's name, for the message.
        positive: refuse zero too (for intervals; a deadline of 0 is valid).
        maximum: refuse more than this many seconds (a value that is stored, where a
            far-off deadline is more likely a typo than a wish).

    Raises:
        TypeError: not a number or a timedelta (a bool is refused: ``True`` is no time).
        ValueError: NaN, infinite, negative, zero where ``positive``, or above ``maximum``.
    """
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {value!r}")
    if math.isnan(result) or math.isinf(result) or result < 0 or (positive and result == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{what} must be a finite number of seconds {bound}, not {value!r}")
    if maximum is not None and result > maximum:
        raise ValueError(f"{what} must be at most {maximum:.0f} seconds, not {value!r}")
    return result


def optional_seconds(
    value: float | timedelta | None, what: str, *, positive: bool = False
) -> float | None:
    """Like :func:`seconds`, with ``None`` (no limit) passed through."""
    return None if value is None else seconds(value, what, positive=positive)


def count(value: int, what: str, minimum: int = 0) -> int:
    """``value`` if it is an int (not a bool) ``>= minimum``, or raise.

    Raises:
        TypeError: not an int.
        ValueError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int >= {minimum}, not {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, not {value!r}")
    return value


def optional_count(value: int | None, what: str, minimum: int = 0) -> int | None:
    """Like :func:`count`, with ``None`` (no limit) passed through."""
    return None if value is None else count(value, what, minimum)


def name(value: str | None, what: str = "name") -> str | None:
    """``value`` if it is None or text that encodes as UTF-8, or raise.

    Raises:
        TypeError: not a string.
        ValueError: a string with lone surrogates (it could not be stored or sent).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid UTF-8 text; use printable text") from None
    return value


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` returns an awaitable coroutine: an ``async def`` function,
    a ``functools.partial`` of one, or an object whose class has ``async def __call__``.

    The one test of "is this async" in cancelpool: a job, a decorated function and a
    queue task are classified alike.
    """
    if inspect.iscoroutinefunction(fn):
        return True
    # inspect.iscoroutinefunction unwraps functools.partial since Python 3.8.
    return (
        callable(fn)
        and not inspect.isroutine(fn)
        and inspect.iscoroutinefunction(type(fn).__call__)
    )

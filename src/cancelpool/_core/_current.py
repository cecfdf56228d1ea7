"""Which operation is current: one context variable, read by everything that joins
the innermost operation (a child's default parent, decorators, integrations, jobs)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._cancelable import Cancelable

#: Set by an operation's ``async with`` for its body, reset at its exit.
current_var: ContextVar[Cancelable | None] = ContextVar(
    "cancelpool_current_operation", default=None
)


def current_operation() -> Cancelable | None:
    """The innermost :class:`Cancelable` active in this task (or thread), or None.

    Based on a context variable: concurrent tasks each see their own operation, and
    :meth:`Cancelable.run_in_thread` carries it into the worker thread.
    """
    return current_var.get()

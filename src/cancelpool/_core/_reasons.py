"""How a cancellation is worded: the labels, messages and error attributes an
operation records when it learns why it is cancelled.

One place for every sentence a program or a person might read (and match on), so
that the operation, its token and its errors say the same thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._enums import CancelationReason

if TYPE_CHECKING:
    from ._context import OperationContext


def label_of(context: OperationContext) -> str:
    """How messages name an operation: its quoted name, else the start of its id."""
    return repr(context.name) if context.name else context.id[:8]


def timeout_message(label: str, timeout: float) -> str:
    return f"operation {label} timed out after {timeout:g}s"


def default_message(label: str, reason: CancelationReason, timeout: float | None) -> str:
    """The message of a cancellation recorded without one."""
    if reason is CancelationReason.TIMEOUT and timeout is not None:
        return timeout_message(label, timeout)
    return f"operation {label} was cancelled ({reason.value})"


def parent_message(parent_label: str, reason: CancelationReason, message: str) -> str:
    """Why a child is cancelled (reason PARENT) when its parent is, for ``reason``."""
    return f"parent operation {parent_label} was cancelled ({reason.value}): {message}"


def parent_deadline_message(parent_label: str) -> str:
    """Why a child is cancelled when a deadline it carries from its parent passes."""
    return parent_message(parent_label, CancelationReason.TIMEOUT, "it timed out")


def outside_message(label: str) -> str:
    """Why an operation is cancelled by a scope that is no operation."""
    return f"operation {label} was cancelled by an enclosing cancel scope"

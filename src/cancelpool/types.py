"""The seed library's ``types`` path: the callback types and ``ensure_cancelable``.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from . import ErrorCallback as ErrorCallback
from . import ErrorCallbackType as ErrorCallbackType
from . import ProgressCallback as ProgressCallback
from . import ProgressCallbackType as ProgressCallbackType
from . import StatusCallback as StatusCallback
from . import StatusCallbackType as StatusCallbackType
from . import ensure_cancelable as ensure_cancelable

__all__ = (
    "ErrorCallback",
    "ErrorCallbackType",
    "ProgressCallback",
    "ProgressCallbackType",
    "StatusCallback",
    "StatusCallbackType",
    "ensure_cancelable",
)

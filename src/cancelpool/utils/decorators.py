"""The seed library's ``utils.decorators`` path.

The same objects as ``cancelpool``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from .. import cancelable as cancelable
from .. import cancelable_combine as cancelable_combine
from .. import cancelable_method as cancelable_method
from .. import cancelable_with_condition as cancelable_with_condition
from .. import cancelable_with_signal as cancelable_with_signal
from .. import cancelable_with_token as cancelable_with_token
from .. import with_cancelable as with_cancelable
from .. import with_current_operation as with_current_operation
from .. import with_timeout as with_timeout

__all__ = (
    "cancelable",
    "cancelable_combine",
    "cancelable_method",
    "cancelable_with_condition",
    "cancelable_with_signal",
    "cancelable_with_token",
    "with_cancelable",
    "with_current_operation",
    "with_timeout",
)

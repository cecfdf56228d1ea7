"""The seed library's ``utils.streams`` path: cancellable iteration."""

from __future__ import annotations

from .._core._helpers import CancelableAsyncIterator as CancelableAsyncIterator
from .._core._helpers import cancelable_stream as cancelable_stream
from .._core._helpers import chunked_cancelable_stream as chunked_cancelable_stream

__all__ = ("CancelableAsyncIterator", "cancelable_stream", "chunked_cancelable_stream")

# Their public home, for tracebacks and reprs (cancelable_stream's is ``cancelpool``).
CancelableAsyncIterator.__module__ = __name__
chunked_cancelable_stream.__module__ = __name__

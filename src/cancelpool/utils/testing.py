"""The seed library's ``utils.testing`` path (the helpers live in :mod:`cancelpool.testing`).

The same objects as ``cancelpool.testing``; a program written for the seed library imports them
from here unchanged.
"""

from __future__ import annotations

from ..testing import CancelationScenario as CancelationScenario
from ..testing import MockCancelationToken as MockCancelationToken
from ..testing import OperationRecorder as OperationRecorder
from ..testing import assert_cancelation_within as assert_cancelation_within
from ..testing import create_slow_stream as create_slow_stream
from ..testing import run_with_timeout_test as run_with_timeout_test
from ..testing import sample_async_operation as sample_async_operation

__all__ = (
    "CancelationScenario",
    "MockCancelationToken",
    "OperationRecorder",
    "assert_cancelation_within",
    "create_slow_stream",
    "run_with_timeout_test",
    "sample_async_operation",
)

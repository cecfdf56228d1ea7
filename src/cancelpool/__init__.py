"""cancelpool: async jobs in worker processes, with cancellation that reaches them.

The in-process core (``Cancelable``, tokens, sources, registry, decorators, bridges)
works on asyncio and trio; ``CancelPool`` carries it across processes.
"""

from __future__ import annotations

from ._core._bridges import AnyioBridge as AnyioBridge
from ._core._bridges import BridgeStatistics as BridgeStatistics
from ._core._bridges import ContextBridge as ContextBridge
from ._core._bridges import call_soon_threadsafe as call_soon_threadsafe
from ._core._cancelable import Cancelable as Cancelable
from ._core._cancelable import ErrorCallback as ErrorCallback
from ._core._cancelable import ProgressCallback as ProgressCallback
from ._core._cancelable import StatusCallback as StatusCallback
from ._core._cancelable import current_operation as current_operation
from ._core._context import OperationContext as OperationContext
from ._core._decorators import cancelable as cancelable
from ._core._decorators import cancelable_combine as cancelable_combine
from ._core._decorators import cancelable_method as cancelable_method
from ._core._decorators import cancelable_with_condition as cancelable_with_condition
from ._core._decorators import cancelable_with_signal as cancelable_with_signal
from ._core._decorators import cancelable_with_token as cancelable_with_token
from ._core._decorators import with_cancelable as with_cancelable
from ._core._decorators import with_current_operation as with_current_operation
from ._core._enums import CancelationReason as CancelationReason
from ._core._enums import OperationStatus as OperationStatus
from ._core._exceptions import CancelationError as CancelationError
from ._core._exceptions import ConditionCancelation as ConditionCancelation
from ._core._exceptions import JobCancelled as JobCancelled
from ._core._exceptions import ManualCancelation as ManualCancelation
from ._core._exceptions import ParentCancelation as ParentCancelation
from ._core._exceptions import PoolBroken as PoolBroken
from ._core._exceptions import PoolClosed as PoolClosed
from ._core._exceptions import PoolError as PoolError
from ._core._exceptions import SignalCancelation as SignalCancelation
from ._core._exceptions import TimeoutCancelation as TimeoutCancelation
from ._core._exceptions import WorkerCrashed as WorkerCrashed
from ._core._exceptions import WorkerKilled as WorkerKilled
from ._core._exceptions import WorkerLost as WorkerLost
from ._core._helpers import ErrorCallbackType as ErrorCallbackType
from ._core._helpers import ProgressCallbackType as ProgressCallbackType
from ._core._helpers import StatusCallbackType as StatusCallbackType
from ._core._helpers import cancelable_stream as cancelable_stream
from ._core._helpers import ensure_cancelable as ensure_cancelable
from ._core._helpers import with_timeout as with_timeout
from ._core._registry import OperationRegistry as OperationRegistry
from ._core._registry import RegistryStatistics as RegistryStatistics
from ._core._registry import ThreadSafeRegistry as ThreadSafeRegistry
from ._core._sources import AllOfSource as AllOfSource
from ._core._sources import AnyOfSource as AnyOfSource
from ._core._sources import CancelationSource as CancelationSource
from ._core._sources import CompositeSource as CompositeSource
from ._core._sources import ConditionSource as ConditionSource
from ._core._sources import ResourceConditionSource as ResourceConditionSource
from ._core._sources import SignalSource as SignalSource
from ._core._sources import TimeoutSource as TimeoutSource
from ._core._token import CancelationToken as CancelationToken
from ._core._token import CancelNotice as CancelNotice
from ._core._token import LinkedCancelationToken as LinkedCancelationToken
from ._events import Event as Event
from ._events import EventCallback as EventCallback
from ._events import JobFinished as JobFinished
from ._events import JobProgress as JobProgress
from ._events import JobRetried as JobRetried
from ._events import JobStarted as JobStarted
from ._events import JobSubmitted as JobSubmitted
from ._events import LoopStalled as LoopStalled
from ._events import QueueDepth as QueueDepth
from ._events import WorkerDied as WorkerDied
from ._events import WorkerRecycled as WorkerRecycled
from ._events import WorkerStarted as WorkerStarted
from ._pool._handle import JobHandle as JobHandle
from ._pool._handle import ProgressEvent as ProgressEvent
from ._pool._pool import CancelPool as CancelPool
from ._pool._pool import PoolStatistics as PoolStatistics
from ._pool._pool import WorkerStatistics as WorkerStatistics
from ._pool._remote import ChildJob as ChildJob
from ._pool._remote import RemotePool as RemotePool
from ._pool._remote import current_pool as current_pool

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The durable queue pulls in sqlite3: loaded on first use, not on import.
    if name == "Queue":
        from .queue import Queue

        return Queue
    if name == "AsyncQueue":
        from .queue._async_client import AsyncQueue

        return AsyncQueue
    raise AttributeError(f"module 'cancelpool' has no attribute {name!r}")


# The double-l spellings some documents use name the same objects.
Cancellable = Cancelable
CancellationToken = CancelationToken
LinkedCancellationToken = LinkedCancelationToken
CancellationError = CancelationError

__all__ = (
    "AllOfSource",
    "AnyOfSource",
    "AnyioBridge",
    "AsyncQueue",
    "BridgeStatistics",
    "CancelNotice",
    "CancelPool",
    "Cancelable",
    "CancelationError",
    "CancelationReason",
    "CancelationSource",
    "CancelationToken",
    "Cancellable",
    "CancellationError",
    "CancellationToken",
    "ChildJob",
    "CompositeSource",
    "ConditionCancelation",
    "ConditionSource",
    "ContextBridge",
    "ErrorCallback",
    "ErrorCallbackType",
    "Event",
    "EventCallback",
    "JobCancelled",
    "JobFinished",
    "JobHandle",
    "JobProgress",
    "JobRetried",
    "JobStarted",
    "JobSubmitted",
    "LinkedCancelationToken",
    "LinkedCancellationToken",
    "LoopStalled",
    "ManualCancelation",
    "OperationContext",
    "OperationRegistry",
    "OperationStatus",
    "ParentCancelation",
    "PoolBroken",
    "PoolClosed",
    "PoolError",
    "PoolStatistics",
    "ProgressCallback",
    "ProgressCallbackType",
    "ProgressEvent",
    "Queue",
    "QueueDepth",
    "RegistryStatistics",
    "RemotePool",
    "ResourceConditionSource",
    "SignalCancelation",
    "SignalSource",
    "StatusCallback",
    "StatusCallbackType",
    "ThreadSafeRegistry",
    "TimeoutCancelation",
    "TimeoutSource",
    "WorkerCrashed",
    "WorkerDied",
    "WorkerKilled",
    "WorkerLost",
    "WorkerRecycled",
    "WorkerStarted",
    "WorkerStatistics",
    "call_soon_threadsafe",
    "cancelable",
    "cancelable_combine",
    "cancelable_method",
    "cancelable_stream",
    "cancelable_with_condition",
    "cancelable_with_signal",
    "cancelable_with_token",
    "current_operation",
    "current_pool",
    "ensure_cancelable",
    "with_cancelable",
    "with_current_operation",
    "with_timeout",
)


def _fix_module_names() -> None:
    # Public objects show (and pickle as) ``cancelpool.X``, not their private module.
    for name in __all__:
        obj = globals().get(name)
        module = getattr(obj, "__module__", "")
        if module.startswith("cancelpool.") and getattr(obj, "__name__", None) == name:
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):
                pass


_fix_module_names()

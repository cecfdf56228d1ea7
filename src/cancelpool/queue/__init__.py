"""The durable batch queue: jobs in a SQLite file, run by ``cancelpool serve``.

Producers in any process use :class:`Queue`; servers claim jobs atomically, run them in
a :class:`~cancelpool.CancelPool` and store outcomes as JSON. ``sqlite3`` is imported
only when a queue is opened.
"""

from __future__ import annotations

from ._client import Queue as Queue
from ._client import QueueStatistics as QueueStatistics
from ._exceptions import InvalidJob as InvalidJob
from ._exceptions import JobNotFinished as JobNotFinished
from ._exceptions import JobNotFound as JobNotFound
from ._exceptions import NoLiveServer as NoLiveServer
from ._exceptions import QueueError as QueueError
from ._exceptions import QueueFileError as QueueFileError
from ._exceptions import TaskNotAllowed as TaskNotAllowed
from ._model import JobRecord as JobRecord
from ._model import JobStatus as JobStatus

__all__ = (
    "InvalidJob",
    "JobNotFinished",
    "JobNotFound",
    "JobRecord",
    "JobStatus",
    "NoLiveServer",
    "Queue",
    "QueueError",
    "QueueFileError",
    "QueueStatistics",
    "TaskNotAllowed",
)


def _fix_module_names() -> None:
    # Shown (and pickled, when they cross from a worker) as cancelpool.queue.X.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith(__name__ + "."):
            obj.__module__ = __name__


_fix_module_names()

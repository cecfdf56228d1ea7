"""Errors of the durable queue.

::

    Exception
     +-- QueueError                  the queue cannot do what was asked
          +-- InvalidJob             bad input: task path, name, JSON, size (a ValueError)
          |    +-- TaskNotAllowed    no running server's --allow pattern matches the task
          +-- JobNotFound            no job has this id (a LookupError)
          +-- JobNotFinished         ``wait()`` ran out of time (a TimeoutError)
          |    +-- NoLiveServer      ``wait()``: no live server can finish the job
          +-- QueueFileError         no queue at that path, or its files are not
                                     private (wrong owner, mode, type; not a queue)

Every one of them is raised before anything is written: bad input changes nothing.
(``NoLiveServer`` is raised by a wait, which writes nothing either.)
"""

from __future__ import annotations


class QueueError(Exception):
    """The queue could not do what was asked."""


class InvalidJob(QueueError, ValueError):
    """A job spec is malformed: task path, name, arguments, priority or timeout."""


class TaskNotAllowed(InvalidJob):
    """The task matches none of the ``--allow`` patterns of the running servers."""


class JobNotFound(QueueError, LookupError):
    """No job in the queue has this id."""


class JobNotFinished(QueueError, TimeoutError):
    """The job did not finish within the time given to ``wait()``."""


class NoLiveServer(JobNotFinished):
    """``wait()`` gave up early: the job is unfinished and no live server can finish it
    (none runs on the queue, none allows its task, or its server died)."""


class QueueFileError(QueueError):
    """The path holds no queue, or its files cannot be trusted.

    Missing (for a verb that only reads), empty path, a directory, a device, not a
    SQLite database, a database of something else, or files and directories that are
    not private to the current user. The message says how to fix it.
    """


class QueueUnavailable(QueueError, ConnectionError):
    """The queue's database server cannot be reached now (it may come back: a node
    keeps retrying, a client reports it). The message never holds a password."""

"""Errors of the durable queue.

::

    Exception
     +-- QueueError                  the queue cannot do what was asked
          +-- InvalidJob             bad input: task path, name, JSON, size (a ValueError)
          |    +-- TaskNotAllowed    no running server's --allow pattern matches the task
          +-- JobNotFound            no job has this id (a LookupError)
          +-- JobNotFinished         ``wait()`` ran out of time (a TimeoutError)

Every one of them is raised before anything is written: bad input changes nothing.
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

"""Live progress bars for jobs, on rich: for ``JobHandle``\\ s in your own script, and
the columns ``cancelpool watch`` draws its bars with.

::

    from cancelpool import CancelPool
    from cancelpool.progress_display import show_progress

    with CancelPool() as pool:
        handles = [pool.submit(crunch, n, name=f"part-{n}") for n in range(8)]
        show_progress(handles)  # a bar per job until every one has finished

A bar fills from the job's progress metadata (``done``/``total``, or ``percent``);
a job that reports neither shows a moving bar while it runs. Beside it: the rate and the
time left (rich's estimate over the last reports, else the job's average since it
started), the job's last message and how long it has run. When it ends, its row says
how (completed, failed, cancelled with the reason).

Everything a job controls (its name and messages) is shown escaped: no control
character, escape sequence or bidi override reaches the terminal, and rich markup in it
is shown as typed, never interpreted. On a terminal the bars redraw in place; with
``NO_COLOR`` they have no colour; on a pipe or file rich prints the final state once.

This module needs ``rich`` (installed with cancelpool) and is imported only when you
import it: ``import cancelpool`` does not load rich.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.table import Table
from rich.text import Text

from ._visible import done_total, one_line

if TYPE_CHECKING:
    from ._pool._handle import JobHandle

__all__ = (
    "STATUS_STYLES",
    "JobProgress",
    "ProgressDisplay",
    "job_progress",
    "new_console",
    "set_job_task",
    "show_progress",
)

#: The style of each job status, in every table and bar the CLI and this module draw.
STATUS_STYLES = {
    "pending": "dim",
    "queued": "dim",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "interrupted": "magenta",
}

#: How often :meth:`ProgressDisplay.wait` redraws: smooth to the eye, and a redraw of a
#: few dozen bars costs well under a millisecond of the caller's thread.
REFRESH_INTERVAL = 0.1
#: Label column width: long enough for most job names, truncated with an ellipsis
#: beyond (the whole name is in ``--json`` / the handle).
LABEL_WIDTH = 30
#: The message column at most: a whole error sentence on a wide terminal.
MESSAGE_WIDTH = 60


def new_console(*, stderr: bool = False, file: Any = None) -> Console:
    """A rich ``Console`` that never interprets markup, emoji codes or highlights
    numbers in what it prints: job text is shown exactly (after :func:`visible`). Colour,
    ``NO_COLOR``, ``FORCE_COLOR`` and the terminal's width are rich's to decide; on a
    pipe or file without ``$COLUMNS`` lines are not cut to 80 columns (scripts that grep
    them see whole cells)."""
    console = Console(
        file=file, stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=False
    )
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 4096
    return console


def _cell(text: str, width: int | None = None) -> Text:
    """One cell of job text: escaped, whitespace folded, cut with an ellipsis."""
    shown = one_line(text)
    if width is not None and len(shown) > width:
        shown = shown[: max(0, width - 1)] + "…"
    return Text(shown)


class _FieldColumn(ProgressColumn):
    """A column that shows one of the task's fields (a ``Text`` already escaped)."""

    def __init__(self, field: str, width: int | None = None) -> None:
        super().__init__()
        self.field = field
        self.width = width

    def render(self, task: Task) -> Text:
        value = task.fields.get(self.field)
        text = value.copy() if isinstance(value, Text) else Text(str(value or ""))
        if self.width is not None:
            text.truncate(self.width, overflow="ellipsis", pad=True)
            if not self.width:
                return Text("")
        return text


class _StatusColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        status = str(task.fields.get("status", ""))
        return Text(status.ljust(11), style=STATUS_STYLES.get(status, ""))


class _CountColumn(ProgressColumn):
    """``12/40`` for counts, ``37%`` for a percentage, nothing without a fraction."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("".ljust(9))
        if task.fields.get("percent"):
            return Text(f"{task.percentage:>3.0f}%".ljust(9))
        return Text(f"{task.completed:g}/{task.total:g}".ljust(9))


def _rate(task: Task) -> float | None:
    """Reports per second: rich's estimate over recent samples, else the job's own
    average since it started (so the first frame of a watch already has one)."""
    if task.total is None or task.fields.get("ended") is not None:
        return None
    speed = task.speed
    if speed:
        return speed
    started = task.fields.get("started")
    if isinstance(started, (int, float)) and task.completed > 0:
        ran = time.time() - started
        if ran > 0:
            return task.completed / ran
    return None


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = _rate(task)
        if rate is None:
            return Text("".ljust(9))
        unit = "%/s" if task.fields.get("percent") else "/s"
        return Text(f"{rate:.3g}{unit}".ljust(9), style="progress.data.speed")


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _EtaColumn(ProgressColumn):
    """Time left at the current rate: ``eta 0:12``."""

    def render(self, task: Task) -> Text:
        rate = _rate(task)
        if rate is None or task.total is None:
            return Text("".ljust(10))
        left = max(0.0, task.total - task.completed) / rate
        if left > 99 * 3600:
            return Text("".ljust(10))
        return Text(f"eta {_clock(left)}".ljust(10), style="progress.remaining")


class _ElapsedColumn(ProgressColumn):
    """How long the job has run (from its own start, not the display's)."""

    def render(self, task: Task) -> Text:
        started = task.fields.get("started")
        if not isinstance(started, (int, float)):
            return Text("-")
        ended = task.fields.get("ended")
        end = ended if isinstance(ended, (int, float)) else time.time()
        return Text(_clock(max(0.0, end - started)), style="progress.elapsed")


#: Widths of the columns that never shrink: status, count, rate, time left, elapsed,
#: and the gaps between the eight columns.
_FIXED_WIDTH = 11 + 9 + 9 + 10 + 7 + 7


class JobProgress(Progress):
    """A rich ``Progress`` laid out for jobs: label, status, bar, count, rate, time
    left, message, elapsed, fitted to the console's width at each frame (the label, bar
    and message give up width on a narrow terminal; a job stays one line). Tasks carry
    the fields set by :func:`set_job_task`."""

    def __init__(self, console: Console, *, transient: bool = False) -> None:
        self._console = console  # rich's own ``console`` is not set yet while it starts
        self._label = _FieldColumn("label", LABEL_WIDTH)
        self._bar = BarColumn(bar_width=24)
        self._message = _FieldColumn("message", MESSAGE_WIDTH)
        super().__init__(
            self._label,
            _StatusColumn(),
            self._bar,
            _CountColumn(),
            _RateColumn(),
            _EtaColumn(),
            self._message,
            _ElapsedColumn(),
            console=console,
            auto_refresh=False,
            transient=transient,
            expand=False,
        )

    def fit(self, width: int) -> None:
        """Share what the fixed columns leave of ``width`` between label, bar and
        message (at most 30, 24 and 60 cells)."""
        room = max(0, width - _FIXED_WIDTH - 1)
        label = min(LABEL_WIDTH, max(6, room * 2 // 5))
        bar = min(24, max(6, room * 3 // 10))
        self._label.width = label
        self._bar.bar_width = bar
        self._message.width = max(0, min(MESSAGE_WIDTH, room - label - bar))

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        self.fit(self._console.width)
        return super().make_tasks_table(tasks)


def job_progress(console: Console, *, transient: bool = False) -> JobProgress:
    """A :class:`JobProgress` on ``console``, not started: draw it in your own ``Live``
    (it is a renderable) or call its ``start()``."""
    return JobProgress(console, transient=transient)


def set_job_task(
    progress: Progress,
    task: TaskID | None,
    *,
    label: str,
    status: str,
    metadata: Any,
    message: str | None,
    started: float | None,
    ended: float | None,
) -> TaskID:
    """Create (``task`` None) or update a job's bar from what the job reported."""
    counts = done_total(metadata)
    fields: dict[str, Any] = {
        "label": _cell(label, LABEL_WIDTH),
        "status": status,
        "message": _cell(message or ""),
        "percent": counts is not None and not _has_counts(metadata),
        "started": started,
        "ended": ended,
    }
    completed, total = counts if counts is not None else (0.0, None)
    if task is None:
        task = progress.add_task("", total=total)
    progress.update(task, total=total, completed=completed, **fields)
    return task


def _has_counts(metadata: Any) -> bool:
    return isinstance(metadata, dict) and "done" in metadata and "total" in metadata


def _ending(handle: JobHandle[Any]) -> tuple[str, str | None]:
    """A finished handle's status and, for a failure or cancellation, why."""
    from ._core._exceptions import JobCancelled

    exc = handle.exception(timeout=0)
    if exc is None:
        return "completed", None
    if isinstance(exc, JobCancelled):
        reason = exc.reason.value if exc.reason is not None else "?"
        if exc.forced:
            reason += ", forced"
        return "cancelled", reason + (f": {exc.message}" if exc.message else "")
    return "failed", f"{type(exc).__name__}: {exc}"


class ProgressDisplay:
    """Rich progress bars for ``JobHandle``\\ s, redrawn by the thread that calls
    :meth:`wait` or :meth:`refresh` (use it as a context manager around them).

    Progress reports arrive in the pool's supervisor thread; the display only stores
    the latest one per job there (a dict write under a lock) and draws in yours, so a
    slow terminal never slows the pool. Reports of a job's children are not drawn on
    the parent's bar (add the child's handle for a bar of its own).

    The display only watches: leaving it, or an exception (``KeyboardInterrupt``) in
    :meth:`wait`, cancels nothing. To stop the jobs too, cancel them yourself (e.g.
    ``pool.cancel_all()`` in an ``except KeyboardInterrupt``).
    """

    def __init__(
        self,
        handles: Iterable[JobHandle[Any]] = (),
        *,
        console: Console | None = None,
        transient: bool = False,
    ) -> None:
        self.console = console if console is not None else new_console()
        self._progress = job_progress(self.console, transient=transient)
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._handles: list[JobHandle[Any]] = []
        self._tasks: dict[int, TaskID] = {}
        self._reports: dict[int, tuple[str, Any]] = {}
        for handle in handles:
            self.add(handle)

    def add(self, handle: JobHandle[Any]) -> None:
        """Show a bar for ``handle`` (a job of any state; one bar per handle)."""
        if any(known is handle for known in self._handles):
            return
        self._handles.append(handle)
        own = handle.id

        def on_progress(origin: int, message: str, metadata: dict[str, Any]) -> None:
            if origin == own:  # a child's report, bubbled up, has a bar of its own
                with self._lock:
                    self._reports[own] = (message, metadata)
                self._changed.set()

        handle.on_progress(on_progress)
        handle.add_done_callback(lambda _handle: self._changed.set())
        self._tasks[own] = self._draw(handle, None)

    def _draw(self, handle: JobHandle[Any], task: TaskID | None) -> TaskID:
        with self._lock:
            message, metadata = self._reports.get(handle.id, ("", None))
        status = handle.status.value
        if handle.done():
            status, why = _ending(handle)
            message = why or message
            if status == "completed" and done_total(metadata) is None:
                metadata = {"percent": 100}  # a full bar, not a moving one
        return set_job_task(
            self._progress,
            task,
            label=handle.name or f"job {handle.id}",
            status=status,
            metadata=metadata,
            message=message,
            started=handle.started_at,
            ended=handle.ended_at,
        )

    def refresh(self) -> None:
        """Bring every bar up to date and redraw (in the calling thread)."""
        self._changed.clear()
        for handle in self._handles:
            self._draw(handle, self._tasks[handle.id])
        self._progress.refresh()

    def finished(self) -> bool:
        """True when every job shown has finished."""
        return all(handle.done() for handle in self._handles)

    def wait(self, timeout: float | None = None) -> bool:
        """Redraw until every job shown has finished (True) or ``timeout`` seconds
        passed (False). Blocks the calling thread: from async code, run it in a thread
        (``await anyio.to_thread.run_sync(display.wait)``). Waiting cancels nothing."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.refresh()
            if self.finished():
                return True
            left = REFRESH_INTERVAL
            if deadline is not None:
                left = min(left, deadline - time.monotonic())
                if left <= 0:
                    return False
            # A new report or an outcome redraws at once; a moving bar needs a frame
            # now and then anyway.
            self._changed.wait(left)

    def __enter__(self) -> ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.refresh()
        self._progress.stop()


def show_progress(
    handles: JobHandle[Any] | Iterable[JobHandle[Any]],
    *,
    console: Console | None = None,
    transient: bool = False,
    timeout: float | None = None,
) -> bool:
    """Draw a bar per job until every one has finished (True) or ``timeout`` seconds
    passed (False); see :class:`ProgressDisplay`. It watches only: it cancels nothing,
    not even when interrupted, and does not raise the jobs' exceptions (read them from
    the handles)."""
    from ._pool._handle import JobHandle

    shown = [handles] if isinstance(handles, JobHandle) else list(handles)
    with ProgressDisplay(shown, console=console, transient=transient) as display:
        return display.wait(timeout)

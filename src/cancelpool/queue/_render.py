"""The CLI's tables and live view, on rich (imported by the CLI's human-output paths
only: ``--json``, the server and ``import cancelpool`` never load rich).

Every cell is a ``rich.text.Text`` built from text made safe by :func:`._format.cut`
(:func:`~cancelpool._visible.visible`): rich never reads markup in it, and no control
character of a job's reaches the terminal. Rows never wrap: on a narrow terminal the
wide columns (name, task, outcome) are cut with an ellipsis, so one job is one line.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.progress import TaskID
from rich.table import Table
from rich.text import Text

from .._visible import one_line
from ..progress_display import STATUS_STYLES, job_progress, new_console, set_job_task
from ._format import JOB_HEADERS, job_rows
from ._model import JobRecord

__all__ = ("WatchView", "jobs_table", "new_console", "table")

#: Columns that give up width on a narrow terminal (ids, statuses and times keep theirs).
_SHRINKING = frozenset({"NAME", "TASK", "OUTCOME", "ALLOW", "HOST", "LABEL", "PROGRESS"})
#: Spaces between columns.
_GAP = 2


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    status_column: int | None = None,
    width: int | None = None,
) -> Table:
    """Left-aligned columns, a bold header, no borders (so ``cut``/``awk`` still read
    it); ``status_column`` is styled by its own text (a job status). Cells are escaped
    here, whatever the caller passed. Wider than ``width``, the wide columns (name,
    task, outcome, ...) are cut with an ellipsis, the widest first."""
    cells = [[one_line(cell) for cell in row] for row in rows]
    # In terminal cells, as rich lays them out (a CJK character takes two).
    widths = [
        max([cell_len(name), *(cell_len(row[i]) for row in cells)])
        for i, name in enumerate(headers)
    ]
    if width is not None:
        _shrink(widths, [name in _SHRINKING for name in headers], [len(h) for h in headers], width)
    grid = Table(
        box=None,
        show_edge=False,
        pad_edge=False,
        padding=(0, _GAP, 0, 0),
        header_style="bold",
        expand=False,
    )
    for name, most in zip(headers, widths, strict=True):
        grid.add_column(name, no_wrap=True, overflow="ellipsis", max_width=most)
    for row in cells:
        texts = [Text(cell) for cell in row]
        if status_column is not None:
            texts[status_column].stylize(STATUS_STYLES.get(row[status_column], ""))
        grid.add_row(*texts)
    return grid


def _shrink(widths: list[int], shrinks: list[bool], floors: list[int], width: int) -> None:
    """Narrow the shrinking columns, always the widest of them by one, until the row
    fits ``width`` or each is down to its header's width."""
    excess = sum(widths) + _GAP * (len(widths) - 1) - width
    while excess > 0:
        candidates = [i for i, s in enumerate(shrinks) if s and widths[i] > floors[i]]
        if not candidates:
            return
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1


def jobs_table(jobs: Sequence[JobRecord], width: int | None = None) -> Table:
    """``ls``: one row per job (ID, STATUS, NAME, TASK, TRY, PROGRESS, TIME, OUTCOME)."""
    return table(JOB_HEADERS, job_rows(jobs), status_column=1, width=width)


class WatchView:
    """``watch`` on a terminal: a bar per queued or running job (with rate and time
    left from its progress metadata), then the table of the finished ones."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = job_progress(console)
        self._tasks: dict[int, TaskID] = {}
        self._done: list[JobRecord] = []

    def update(self, jobs: Sequence[JobRecord]) -> None:
        active = [job for job in jobs if not job.finished]
        self._done = [job for job in jobs if job.finished]
        for job in self._done:  # a finished job moves from the bars to the table
            task = self._tasks.pop(job.id, None)
            if task is not None:
                self._progress.remove_task(task)
        for job in active:
            self._tasks[job.id] = set_job_task(
                self._progress,
                self._tasks.get(job.id),
                label=job.name or job.task,
                status=job.status.value,
                metadata=job.progress,
                message=job.progress_message or ("stopping…" if job.cancel_requested else ""),
                started=job.started_at,
                ended=None,
            )

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self._tasks:
            parts.append(self._progress.make_tasks_table(self._progress.tasks))
        if self._done:
            if parts:
                parts.append(Text(""))
            parts.append(jobs_table(self._done, self.console.width))
        return Group(*parts)

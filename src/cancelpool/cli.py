"""The ``cancelpool`` command: a durable job queue served by a CancelPool.

``serve`` runs a server; ``submit``, ``cancel``, ``ls``, ``watch``, ``result`` and
``stats`` talk to the queue database from any process; ``demo`` shows it all on a
temporary database. Every client verb has ``--json`` for scripts.

Exit codes of ``result``: 0 completed, 3 failed, 4 cancelled, 5 interrupted, 6 not
finished yet. Bad input exits 2 and changes nothing; an unknown job id exits 1.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__

if TYPE_CHECKING:
    from .queue import JobRecord, Queue

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 3
EXIT_CANCELLED = 4
EXIT_INTERRUPTED = 5
EXIT_NOT_FINISHED = 6
_STATUS_EXIT = {
    "completed": 0,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "interrupted": EXIT_INTERRUPTED,
}
STATUSES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")

#: How often ``watch`` re-reads the database and redraws. The server commits progress
#: at most every 0.1 s, so faster redraws show nothing new.
WATCH_INTERVAL = 0.1


class BadInput(click.ClickException):
    """Invalid job input: exit 2, like a usage error, and nothing was written."""

    exit_code = 2


#: No queue at that path, or its files are refused (owner, mode, type, not a queue).
EXIT_NO_QUEUE = 3


class NoQueue(click.ClickException):
    """No usable queue at the path (missing for a read-only verb, or refused): exit 3."""

    exit_code = EXIT_NO_QUEUE


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="CANCELPOOL_DB",
        default=None,
        help="Queue database (default: $CANCELPOOL_DB or ~/.local/state/cancelpool/queue.db).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def keep_waiting_option(fn: F) -> F:
    return click.option(
        "--keep-waiting",
        is_flag=True,
        help="With --wait: when no live server can run the job, say so once and keep "
        f"waiting for one (default: say so and exit {EXIT_NOT_FINISHED}, not finished).",
    )(fn)


@contextmanager
def open_queue(db: Path | None, *, create: bool = True) -> Iterator[Queue]:
    """Open the queue; ``create=False`` for verbs that must not create one."""
    import sqlite3

    from .queue import InvalidJob, JobNotFound, Queue, QueueError, QueueFileError

    try:
        queue = Queue(db, create=create)
    except QueueFileError as exc:
        raise NoQueue(str(exc)) from None
    except QueueError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot open the queue database: {exc}") from None
    try:
        yield queue
    except sqlite3.OperationalError as exc:
        raise click.ClickException(f"the queue database {queue.path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise NoQueue(f"the queue database {queue.path} is damaged: {exc}") from None
    except InvalidJob as exc:
        raise BadInput(str(exc)) from None
    except JobNotFound as exc:
        raise click.ClickException(str(exc)) from None
    except QueueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        queue.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="cancelpool")
def cli() -> None:
    """A durable job queue whose running jobs can really be cancelled.

    Start with `cancelpool demo`.
    """


# -- serve -----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.option(
    "--allow",
    "allow",
    multiple=True,
    required=True,
    metavar="PATTERN",
    help="Tasks this server may run, as a glob on 'module:function' (repeatable), "
    "e.g. 'myapp.tasks:*'.",
)
@click.option(
    "--workers", type=click.IntRange(1, 512), default=None, help="Worker processes (default: CPUs)."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Jobs this server runs at once (default: 16 per worker).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 1000),
    default=3,
    show_default=True,
    help="Starts per job before a job of a dead server counts as interrupted.",
)
@click.option(
    "--on-shutdown",
    type=click.Choice(["requeue", "cancel"]),
    default="requeue",
    show_default=True,
    help="What SIGTERM/Ctrl-C does to the running jobs.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=10.0,
    show_default=True,
    help="Seconds a shutdown waits for cancelled jobs to stop.",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="DIR",
    help="Import tasks from DIR too (repeatable; first wins). The working directory is "
    "never on the import path: give --path . to import from it.",
)
@click.option("--quiet", "-q", is_flag=True, help="Log nothing but errors.")
def serve(
    db: Path | None,
    allow: tuple[str, ...],
    paths: tuple[str, ...],
    workers: int | None,
    concurrency: int | None,
    max_attempts: int,
    on_shutdown: str,
    grace: float,
    quiet: bool,
) -> None:
    """Run queued jobs in a CancelPool until SIGTERM or Ctrl-C.

    On shutdown it stops claiming, cancels the running jobs (keeping their partial
    results), requeues or cancels them per --on-shutdown, and exits 0.
    """
    from .queue import QueueFileError
    from .queue._model import check_allow_pattern
    from .queue._server import Server, ServerOptions
    from .queue._store import default_db_path
    from .queue._task import set_server_import_path

    for pattern in allow:
        try:
            check_allow_pattern(pattern)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    try:
        # Tasks come from the environment's path plus --path, never the working dir.
        set_server_import_path(paths)
    except QueueFileError as exc:
        raise NoQueue(str(exc)) from None

    def log(message: str) -> None:
        if not quiet:
            click.echo(f"{time.strftime('%H:%M:%S')} cancelpool serve: {message}", err=True)

    options = ServerOptions(
        allow=allow,
        workers=workers or os.cpu_count() or 1,
        concurrency=concurrency,
        max_attempts=max_attempts,
        on_shutdown=on_shutdown,
        grace=grace,
    )
    try:
        server = Server(db or default_db_path(), options, log)
    except QueueFileError as exc:
        raise NoQueue(str(exc)) from None
    sys.exit(server.run())


# -- submit ----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.argument("task")
@click.argument("args_json", required=False, default="[]")
@click.option("--name", default=None, help="Label for patterns: letters, digits, _.:@/+=,-")
@click.option("--timeout", type=float, default=None, help="Seconds the job may run.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--parent", type=int, default=None, help="Parent job id: its cancel cancels this.")
@click.option("--wait", is_flag=True, help="Wait for the outcome and print it (like `result`).")
@keep_waiting_option
@json_option
def submit(
    db: Path | None,
    task: str,
    args_json: str,
    name: str | None,
    timeout: float | None,
    priority: int,
    parent: int | None,
    wait: bool,
    keep_waiting: bool,
    as_json: bool,
) -> None:
    """Queue TASK ('package.module:function') with ARGS_JSON; print the job id.

    ARGS_JSON: a JSON array is positional arguments, an object keyword arguments,
    anything else a single argument. Use '-' to read it from stdin.
    """
    from .queue._model import parse_args_json

    if args_json == "-":
        args_json = sys.stdin.read()
    with open_queue(db) as queue:
        args, kwargs = parse_args_json(args_json)
        job_id = queue._submit(task, args, kwargs, name, timeout, priority, parent)
        if wait:
            _show_result(
                queue, job_id, wait=True, timeout=None, as_json=as_json, keep_waiting=keep_waiting
            )
        elif as_json:
            click.echo(_json({"id": job_id}))
        else:
            click.echo(job_id)


# -- cancel ----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.argument("ids", nargs=-1, type=click.IntRange(min=1))
@click.option("--pattern", default=None, help="Cancel every unfinished job whose name matches.")
@click.option("--message", default=None, help="Why (stored with the jobs).")
@click.option("--wait", is_flag=True, help="Wait until the running ones have stopped.")
@keep_waiting_option
@json_option
def cancel(
    db: Path | None,
    ids: tuple[int, ...],
    pattern: str | None,
    message: str | None,
    wait: bool,
    keep_waiting: bool,
    as_json: bool,
) -> None:
    """Cancel jobs by ID or --pattern 'user_42_*', with their child jobs.

    Queued jobs never run; running ones are stopped within milliseconds and keep
    their partial results.
    """
    if not ids and pattern is None:
        raise click.UsageError("give job ids or --pattern")
    with open_queue(db, create=False) as queue:
        outcome = queue.cancel_jobs(ids, name_pattern=pattern, message=message)
        if wait:
            for job_id in outcome.requested:
                if _wait_for(queue, job_id, None, keep_waiting)[0] is None:
                    sys.exit(EXIT_NOT_FINISHED)
        if as_json:
            click.echo(
                _json(
                    {
                        "cancelled": list(outcome.cancelled),
                        "requested": list(outcome.requested),
                        "already_finished": list(outcome.finished),
                    }
                )
            )
            return
        if not outcome.count and not outcome.finished:
            click.echo("no unfinished job matches")
            return
        parts = []
        if outcome.cancelled:
            parts.append(f"{len(outcome.cancelled)} queued")
        if outcome.requested:
            parts.append(f"{len(outcome.requested)} running ({'stopped' if wait else 'stopping'})")
        if outcome.count:
            click.echo(f"cancelled {outcome.count} job(s): {', '.join(parts)}")
        if outcome.finished:
            listed = ", ".join(map(str, outcome.finished))
            click.echo(f"already finished: {listed}")


# -- ls --------------------------------------------------------------------------------------
@cli.command(name="ls")
@db_option
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help="Only jobs in this status (repeatable).",
)
@click.option("--pattern", default=None, help="Only jobs whose name matches this glob.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show the newest N jobs.",
)
@json_option
def ls_command(
    db: Path | None,
    statuses: tuple[str, ...],
    pattern: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs: status, progress, time and outcome."""
    from .queue._format import jobs_table

    with open_queue(db, create=False) as queue:
        jobs = queue.store.list_jobs(
            status=statuses, pattern=pattern, limit=limit, newest_first=True
        )
        jobs.reverse()
        if as_json:
            click.echo(_json([job.to_dict() for job in jobs]))
        elif jobs:
            click.echo(jobs_table(jobs, _colour()))
        else:
            click.echo("no jobs")


# -- watch -----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.argument("ids", nargs=-1, type=click.IntRange(min=1))
@click.option("--pattern", default=None, help="Jobs whose name matches this glob.")
@click.option("--timeout", type=float, default=None, help="Stop watching after this many seconds.")
@json_option
def watch(
    db: Path | None,
    ids: tuple[int, ...],
    pattern: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Live progress of jobs (all unfinished ones by default) until they finish.

    On a terminal: a bar per running job, a table of the finished ones. Otherwise (or
    with --json): one line per change.
    """
    with open_queue(db, create=False) as queue:
        store = queue.store
        if ids:
            missing = [i for i in ids if store.status_of(i) is None]
            if missing:
                raise click.ClickException(f"no job with id {', '.join(map(str, missing))}")
            watched = list(ids)
        else:
            jobs = store.list_jobs(status=("queued", "running"), pattern=pattern)
            watched = [job.id for job in jobs]
        if not watched:
            click.echo("no unfinished job to watch")
            return
        _watch_loop(queue, watched, timeout=timeout, as_json=as_json)


def _watch_loop(
    queue: Queue,
    ids: list[int],
    *,
    timeout: float | None,
    as_json: bool,
    on_tick: Callable[[], list[str]] | None = None,
    erase: bool = False,
) -> None:
    """Redraw (terminal) or print changes (pipe) until every job in ``ids`` finished.

    ``on_tick`` runs before each frame; the lines it returns are printed above the
    live view, once. ``erase`` clears the live view at the end.
    """
    from .queue._format import live_lines, progress_text, to_json

    live = sys.stdout.isatty() and not as_json
    colour = _colour()
    deadline = None if timeout is None else time.monotonic() + timeout
    drawn = 0
    last: dict[int, tuple[str, str]] = {}
    while True:
        messages = on_tick() if on_tick is not None else []
        jobs = queue.store.list_jobs(ids=ids)
        finished = all(job.finished for job in jobs)
        if live:
            lines = [*messages, *live_lines(jobs, colour)]
            click.echo((f"\x1b[{drawn}F\x1b[J" if drawn else "") + "\n".join(lines))
            drawn = len(lines) - len(messages)
        else:
            for message in messages:
                click.echo(message)
            for job in jobs:
                state = (job.status.value, job.progress_message or "")
                if last.get(job.id) != state:
                    last[job.id] = state
                    if as_json:
                        click.echo(to_json(job.to_dict()))
                    else:
                        click.echo(
                            f"{job.id} {job.name or job.task} {job.status.value} "
                            f"{progress_text(job)} {job.progress_message or ''}".rstrip()
                        )
        if finished or (deadline is not None and time.monotonic() >= deadline):
            if live and erase and drawn:
                click.echo(f"\x1b[{drawn}F\x1b[J", nl=False)
            return
        time.sleep(WATCH_INTERVAL)


# -- result ----------------------------------------------------------------------------------
@cli.command()
@db_option
@click.argument("job_id", type=click.IntRange(min=1))
@click.option("--wait", is_flag=True, help="Wait until the job has finished.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this.")
@keep_waiting_option
@json_option
def result(
    db: Path | None,
    job_id: int,
    wait: bool,
    timeout: float | None,
    keep_waiting: bool,
    as_json: bool,
) -> None:
    """Print a job's result (JSON), or its error / partial result.

    Exit code: 0 completed, 3 failed, 4 cancelled, 5 interrupted, 6 not finished.
    """
    with open_queue(db, create=False) as queue:
        _show_result(
            queue, job_id, wait=wait, timeout=timeout, as_json=as_json, keep_waiting=keep_waiting
        )


def _wait_for(
    queue: Queue, job_id: int, timeout: float | None, keep_waiting: bool
) -> tuple[JobRecord | None, bool]:
    """``queue.wait`` that tells the user on stderr when no live server can finish the
    job: then (None, True), or (``keep_waiting``) it keeps waiting. (None, False) on
    ``timeout``; (record, told) when the job finished."""
    from .queue import JobNotFinished, NoLiveServer

    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        return queue.wait(job_id, timeout, need_server=True), False
    except NoLiveServer as exc:
        if not keep_waiting:
            click.echo(f"{exc} (or pass --keep-waiting)", err=True)
            return None, True
        click.echo(f"{exc}; waiting for a server (--keep-waiting)", err=True)
    except JobNotFinished:
        return None, False
    remaining = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
    try:
        return queue.wait(job_id, remaining), True
    except JobNotFinished:
        return None, True


def _show_result(
    queue: Queue,
    job_id: int,
    *,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    keep_waiting: bool = False,
) -> None:
    from .queue import JobNotFound
    from .queue._format import pretty_json

    job = queue.get(job_id)
    if job is None:
        raise JobNotFound(f"no job with id {job_id}")
    told = False
    if wait and not job.finished:
        waited, told = _wait_for(queue, job_id, timeout, keep_waiting)
        job = waited or queue.get(job_id)
        assert job is not None
    status = job.status.value
    if as_json:
        click.echo(_json(job.to_dict()))
    elif status == "completed":
        click.echo(pretty_json(job.result))
    elif status == "failed":
        click.echo(f"job {job_id} failed: {job.error}", err=True)
        if job.traceback:
            click.echo(job.traceback.rstrip(), err=True)
    elif status in ("cancelled", "interrupted"):
        why = job.cancel_message or job.error or status
        click.echo(f"job {job_id} {status} ({job.cancel_reason or 'died'}): {why}", err=True)
        click.echo(pretty_json(job.partial_result))
    elif not told:  # else the reason it is unfinished was said already
        click.echo(f"job {job_id} is {status}", err=True)
    sys.exit(_STATUS_EXIT.get(status, EXIT_NOT_FINISHED))


# -- stats -----------------------------------------------------------------------------------
@cli.command()
@db_option
@json_option
def stats(db: Path | None, as_json: bool) -> None:
    """Jobs per status and the running servers."""
    from .queue._format import table

    with open_queue(db, create=False) as queue:
        info = queue.statistics()
        counts = {s: getattr(info, s) for s in STATUSES}
        servers = [
            {
                "id": s.id,
                "pid": s.pid,
                "workers": s.workers,
                "allow": list(s.allow),
                "started_at": s.started_at,
                "heartbeat": s.heartbeat,
            }
            for s in info.servers
        ]
        if as_json:
            click.echo(_json({"db": str(queue.path), "jobs": counts, "servers": servers}))
            return
        click.echo(f"queue {queue.path}")
        click.echo(table(list(counts), [[str(n) for n in counts.values()]], colour=_colour()))
        if not info.servers:
            click.echo("no server running")
            return
        now = time.time()
        rows = [
            [s.id, str(s.pid), str(s.workers), f"{now - s.started_at:.0f}s", " ".join(s.allow)]
            for s in info.servers
        ]
        click.echo(table(["SERVER", "PID", "WORKERS", "UP", "ALLOW"], rows, colour=_colour()))


# -- demo ------------------------------------------------------------------------------------
@cli.command()
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
def demo(workers: int) -> None:
    """Run a server on a temporary queue, submit a small batch, cancel some of it live.

    Shows progress bars, a pattern cancel ('user_42_*'), a parent cancelled with its
    children, a timeout and a failure, then the outcome table with partial results.
    Leaves nothing behind.
    """
    from .queue._demo import run_demo

    sys.exit(run_demo(workers, colour=_colour(), watch=_watch_loop))


def _json(value: Any) -> str:
    from .queue._format import pretty_json

    return pretty_json(value)


def main() -> None:
    """Entry point of the ``cancelpool`` console script."""
    cli(prog_name="cancelpool")


if __name__ == "__main__":
    main()

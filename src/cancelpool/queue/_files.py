"""Which queue files may be trusted: checked at open, like ssh's ``StrictModes``.

A queue is private to the user who runs it. Its database, the database's ``-wal``,
``-shm`` and ``-journal`` files and the servers' wake-up FIFOs (in ``<db>.ctl/``) are
0600; the directory that holds the database belongs to that user and nobody else can
write to it; ``<db>.ctl/`` is 0700. Every directory above them belongs to the user or
to root and is not writable by others unless it is sticky (``/tmp``), so nobody else
can rename a component of the path and put their own files in its place.

What is refused, each with a sentence that says how to fix it (:class:`QueueFileError`):
a path that is empty, a directory, a symbolic link, a device or anything but a regular
file; a database or directory owned by another user; one writable by group or others.
What is fixed silently, because it is ours and the fix only narrows access: a database
or side file readable by group or others becomes 0600, ``<db>.ctl/`` becomes 0700.

Nothing here opens the database file itself (``lstat`` only): closing any descriptor of
a SQLite file drops every POSIX lock this process holds on it, including those of
another open ``Queue``.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._exceptions import QueueFileError

#: The files SQLite keeps beside a database (WAL mode, plus a rollback journal left by
#: a crash before the switch to WAL).
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def resolve_db_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path of a database, its directory's symbolic links resolved.

    Raises:
        QueueFileError: the path is empty or ends in a directory separator.
    """
    text = os.fspath(path)
    if not text or not text.strip():
        raise QueueFileError(
            "the queue database path is empty; give a file such as ~/jobs/queue.db"
        )
    expanded = Path(text).expanduser()
    if text.endswith(os.sep) or expanded.name in ("", ".", ".."):
        raise QueueFileError(
            f"{text} names a directory; give the database file inside it, "
            f"e.g. {Path(text) / 'queue.db'}"
        )
    absolute = expanded.absolute()
    return Path(os.path.realpath(absolute.parent)) / absolute.name


def _owner_ok_for_ancestor(info: os.stat_result) -> bool:
    return info.st_uid in (os.getuid(), 0)


def check_ancestors(directory: Path) -> None:
    """Every directory above ``directory``: owned by us or root, not writable by others
    unless sticky."""
    for parent in directory.parents:
        info = os.stat(parent)
        if not _owner_ok_for_ancestor(info):
            raise QueueFileError(
                f"{parent} (above the queue's directory) belongs to uid {info.st_uid}, who "
                "could replace the queue's files; keep the queue under a directory of "
                "your own"
            )
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise QueueFileError(
                f"{parent} (above the queue's directory) is writable by other users, who "
                f"could replace the queue's files; run `chmod go-w {parent}` or keep the "
                "queue elsewhere"
            )


def check_queue_dir(directory: Path, *, create: bool) -> None:
    """The directory that holds a database: ours, not writable by group or others.

    Args:
        create: create it (and missing parents) 0700 if it does not exist; otherwise a
            missing directory means there is no queue.
    """
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    if missing:
        if not create:
            raise QueueFileError(
                f"no queue at {directory}: the directory does not exist (nothing was created)"
            )
        check_ancestors(missing[-1])
        for new in reversed(missing):
            try:
                os.mkdir(new, 0o700)
            except FileExistsError:
                pass  # a concurrent first open made it: checked below like any other
    else:
        check_ancestors(directory)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise QueueFileError(f"{directory} is not a directory; the queue needs one to live in")
    if info.st_uid != os.getuid():
        raise QueueFileError(
            f"{directory} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); a "
            "queue lives in a directory of its user's own: use one of yours"
        )
    if info.st_mode & 0o022 and info.st_mode & stat.S_ISVTX:
        raise QueueFileError(
            f"{directory} is a shared directory (writable by group or others, like /tmp), "
            "where others could plant the queue's side files; make a private one "
            f"(mkdir -m 700 {directory / 'myqueue'}) and put the queue there"
        )
    if info.st_mode & 0o022:
        raise QueueFileError(
            f"{directory} is writable by group or others, who could replace the queue's "
            f"files; run `chmod go-w {directory}` (or `chmod 700`) or use another directory"
        )


SIDE_FILE = "database's side file"


def check_private_file(path: Path, *, what: str) -> bool:
    """Check a queue file if it exists; True if it does.

    Raises:
        QueueFileError: not a regular file, not ours, or writable by group or others.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        fix = (
            "remove the link (SQLite makes this file itself)"
            if what == SIDE_FILE
            else f"give the {what}'s real path"
        )
        raise QueueFileError(f"{path} is a symbolic link; {fix} (links are not followed)")
    if stat.S_ISDIR(info.st_mode):
        raise QueueFileError(
            f"{path} is a directory; a queue is a file: give a path such as {path / 'queue.db'}"
        )
    if not stat.S_ISREG(info.st_mode):
        raise QueueFileError(f"{path} is not a regular file, so it cannot be a queue {what}")
    if info.st_uid != os.getuid():
        raise QueueFileError(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); a queue "
            "is private to the user who runs it: use a queue of your own"
        )
    if info.st_mode & 0o022:
        raise QueueFileError(
            f"{path} is writable by group or others; run `chmod 600 {path}` if you trust "
            "its contents, or start a new queue"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o600, follow_symlinks=False)
    return True


def create_db_file(path: Path) -> None:
    """Create an empty database file 0600 (SQLite gives its side files the same mode)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return  # a concurrent first open won: the caller checks the file it made
    os.close(fd)


def check_db_files(path: Path, *, create: bool) -> None:
    """The database and its side files, before SQLite opens anything.

    Args:
        create: create the database (0600) if it does not exist; otherwise a missing
            database means there is no queue.
    """
    exists = check_private_file(path, what="database")
    if not exists and not create:
        raise QueueFileError(f"no queue at {path} (nothing was created)")
    # The side files first: a refused one leaves nothing created.
    for suffix in SIDE_SUFFIXES:
        check_private_file(path.with_name(path.name + suffix), what=SIDE_FILE)
    if not exists:
        create_db_file(path)
        check_private_file(path, what="database")


def control_dir(db_path: Path) -> Path:
    """The directory that holds the servers' wake-up FIFOs of one database."""
    return db_path.with_name(db_path.name + ".ctl")


def check_control_dir(db_path: Path, *, create: bool) -> Path | None:
    """``<db>.ctl/``: ours and 0700 (made so if ours); None if missing and not ``create``."""
    ctl = control_dir(db_path)
    if create:
        try:
            os.mkdir(ctl, 0o700)
        except FileExistsError:
            pass
    try:
        info = os.lstat(ctl)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        raise QueueFileError(
            f"{ctl} is not a directory; remove it (the queue keeps its FIFOs there)"
        )
    if info.st_uid != os.getuid():
        raise QueueFileError(
            f"{ctl} belongs to uid {info.st_uid}, not to you; remove it so the queue can "
            "make its own"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(ctl, 0o700, follow_symlinks=False)
    return ctl


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (creates nothing).

    Opening a queue checks, creates and initialises its files under this lock, so
    concurrent first opens of one database (a server starting while clients submit)
    wait for each other instead of racing SQLite's switch to WAL mode.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock

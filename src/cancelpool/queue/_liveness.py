"""Is a registered server alive, and how to wake it: derived, never read from the row.

A row of the ``servers`` table says which server claimed jobs; it is not trusted to say
where that server listens or whether it runs. The wake-up FIFO's path is derived from
the database path and the server's id (12 hex digits, checked):
``<db>.ctl/<id>.wake``. It is opened with ``O_NOFOLLOW | O_NONBLOCK`` and used only if
``fstat`` shows a FIFO owned by the current user.

A server is alive when both hold:

* its process (pid and start time from the row) exists, is not a zombie and belongs to
  the current user;
* its FIFO has a reader: a server holds its read end open from before it registers
  until after it unregisters, and the kernel closes it when the process dies, so a
  killed or zombie server cannot look alive, and a reused pid does not fake one.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from ._files import control_dir

_SERVER_ID = re.compile(r"[0-9a-f]{12}")
#: Two records of one process's start time are the same process if this close (psutil
#: derives it from clock ticks); a reused pid starts later by far more.
PROC_START_TOLERANCE = 1.0


def valid_server_id(server_id: object) -> bool:
    """True if ``server_id`` has the shape servers give themselves (12 hex digits)."""
    return isinstance(server_id, str) and _SERVER_ID.fullmatch(server_id) is not None


def wake_path(db_path: Path, server_id: str) -> Path:
    """Where the server ``server_id`` of this database listens (a derived path).

    Raises:
        ValueError: ``server_id`` is not 12 hex digits (a row nobody should trust).
    """
    if not valid_server_id(server_id):
        raise ValueError(f"not a server id: {server_id!r}")
    return control_dir(db_path) / f"{server_id}.wake"


def _open_fifo(db_path: Path, server_id: str) -> int | None:
    """A write end of the server's FIFO, or None if it has no reader (or is not ours)."""
    if not valid_server_id(server_id):
        return None
    path = wake_path(db_path, server_id)
    try:
        before = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISFIFO(before.st_mode) or before.st_uid != os.getuid():
        return None
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT, errno.EACCES, errno.ELOOP, errno.ENOTDIR):
            return None  # ENXIO: nobody reads it, the server is gone
        raise
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino) or info.st_uid != os.getuid():
        os.close(fd)
        return None
    return fd


def poke_server(db_path: Path, server_id: str) -> bool:
    """Write one wake-up byte to a live server's FIFO; False if nobody listens there."""
    fd = _open_fifo(db_path, server_id)
    if fd is None:
        return False
    try:
        os.write(fd, b"!")
    except OSError:
        pass  # full: it has wake-ups pending already
    finally:
        os.close(fd)
    return True


def listening(db_path: Path, server_id: str) -> bool:
    """True if the server's FIFO exists, is ours and has a reader."""
    fd = _open_fifo(db_path, server_id)
    if fd is None:
        return False
    os.close(fd)
    return True


def process_alive(pid: object, proc_start: object) -> bool:
    """True if ``pid`` runs, is not a zombie, is ours, and started at ``proc_start``."""
    import psutil

    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    if isinstance(proc_start, bool) or not isinstance(proc_start, (int, float)):
        return False
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            if proc.uids().real != os.getuid():
                return False
            started = proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return False  # not ours to inspect, so not our server
    return abs(started - proc_start) < PROC_START_TOLERANCE


def process_start_time(pid: int) -> float:
    """The start time of ``pid`` as :func:`process_alive` compares it."""
    import psutil

    return float(psutil.Process(pid).create_time())


def server_alive(db_path: Path, server_id: str, pid: object, proc_start: object) -> bool:
    """True if the server ``server_id`` of this database runs (see the module docstring)."""
    return process_alive(pid, proc_start) and listening(db_path, server_id)


def remove_fifo(db_path: Path, server_id: str) -> None:
    """Remove a dead server's FIFO: only a FIFO of ours at the derived path."""
    if not valid_server_id(server_id):
        return
    path = wake_path(db_path, server_id)
    try:
        info = os.lstat(path)
    except OSError:
        return
    if stat.S_ISFIFO(info.st_mode) and info.st_uid == os.getuid():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

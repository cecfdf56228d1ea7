"""TokenTable, SharedToken and Doorbell across real processes, under every start method.

Children are ordered by explicit handshakes over pipes (request -> reply), never by
sleeping. Every real-time bound below is a deadlock backstop, far above what the step
needs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import cancelpool.shm
from cancelpool._core._enums import CancelationReason
from cancelpool.shm import Doorbell, SharedToken, SlotRef, TokenTable

# Seconds. A backstop against a hung child, never a synchronization.
BACKSTOP = 60.0

TIMEOUT = CancelationReason.TIMEOUT
MANUAL = CancelationReason.MANUAL
PARENT = CancelationReason.PARENT

START_METHODS = [
    pytest.param(
        "fork",
        marks=pytest.mark.filterwarnings(
            # Python >= 3.12 warns about fork() in a process with threads (xdist's);
            # these children only read memory and pipes, which is fork-safe.
            "ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning"
        ),
    ),
    "spawn",
    "forkserver",
]


@pytest.fixture(params=START_METHODS)
def ctx(request: pytest.FixtureRequest) -> multiprocessing.context.BaseContext:
    context: multiprocessing.context.BaseContext = multiprocessing.get_context(request.param)
    return context


def maps_of(pid: int | str) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def ask(conn: multiprocessing.connection.Connection, *request: Any) -> Any:
    """Send a request to the child and wait for its reply."""
    conn.send(request)
    assert conn.poll(BACKSTOP), f"no reply to {request!r} within the backstop"
    return conn.recv()


def run_child(
    ctx: multiprocessing.context.BaseContext,
    target: Callable[..., None],
    args: tuple[Any, ...],
    dialogue: Callable[[multiprocessing.connection.Connection], None],
) -> None:
    """Start ``target(*args, conn)`` in a child, talk to it, and check it ends cleanly."""
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child_conn), daemon=True)  # type: ignore[attr-defined]
    proc.start()
    child_conn.close()
    try:
        dialogue(conn)
    finally:
        conn.close()
        proc.join(BACKSTOP)
        if proc.is_alive():  # pragma: no cover - only when the test already failed
            proc.kill()
            proc.join()
    assert proc.exitcode == 0
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == "zombie"


# -- children (module level: spawn and forkserver import them by name) --------------------
def reader_child(
    table: TokenTable, bell: Doorbell, conn: multiprocessing.connection.Connection
) -> None:
    """Serve read requests about the table until told to exit."""
    while True:
        command, *args = conn.recv()
        if command == "info":
            try:
                table.allocate()
                allocate_error = ""
            except RuntimeError as exc:
                allocate_error = str(exc)
            maps = maps_of("self")
            conn.send(
                {
                    "writer": table.writer,
                    "capacity": table.capacity,
                    "used": table.used,
                    "allocate_error": allocate_error,
                    "maps_memfd": "/memfd:cancelpool-tokens" in maps,
                    "maps_dev_shm": "/dev/shm/" in maps,
                }
            )
        elif command == "state":
            conn.send([table.state(SlotRef(*ref)) for ref in args[0]])
        elif command == "wait_bell":
            readable = select.select([bell.fileno()], [], [], args[0])[0]
            conn.send((bool(readable), bell.drain()))
        elif command == "exit":
            table.close()
            bell.close()
            conn.send("closed")
            return


def asyncio_child(
    table: TokenTable,
    bell: Doorbell,
    ref: SlotRef,
    conn: multiprocessing.connection.Connection,
) -> None:
    """A worker in miniature: a job awaits its SharedToken; the doorbell, watched with
    ``loop.add_reader``, is the only thing that can wake it."""

    async def main() -> dict[str, Any]:
        token = SharedToken(table, ref)
        synced: list[bool] = []
        loop = asyncio.get_running_loop()

        def on_ring() -> None:
            bell.drain()
            synced.append(token.sync_from_table())

        async def job() -> None:
            await token.wait_for_cancel()

        loop.add_reader(bell.fileno(), on_ring)
        try:
            with anyio.fail_after(BACKSTOP):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(job)
                    await anyio.wait_all_tasks_blocked()
                    conn.send(("waiting", token.is_cancelled))
        finally:
            loop.remove_reader(bell.fileno())
        return {"synced": synced, "reason": token.reason, "message": token.message}

    conn.send(anyio.run(main, backend="asyncio"))


# -- tests ---------------------------------------------------------------------------------
def test_child_sees_cancels_written_by_the_parent(
    ctx: multiprocessing.context.BaseContext, no_leaks: None
) -> None:
    with TokenTable.create(8) as table, Doorbell() as bell:
        root = table.allocate()
        child = table.allocate(root)
        grandchild = table.allocate(child)
        stale = table.allocate()
        table.release(stale)
        reuse = table.allocate()
        assert reuse.index == stale.index
        refs = [root, child, grandchild, reuse, stale]

        def dialogue(conn: multiprocessing.connection.Connection) -> None:
            info = ask(conn, "info")
            assert info["writer"] is False  # also under fork, where the table is inherited
            assert info["capacity"] == 8
            assert info["used"] == 4
            assert "only be called in the process that created" in info["allocate_error"]
            assert info["maps_memfd"]
            assert not info["maps_dev_shm"]
            assert ask(conn, "state", refs) == [(False, None)] * 5

            table.cancel(child, TIMEOUT)
            table.cancel(reuse, MANUAL)
            assert ask(conn, "state", refs) == [
                (False, None),
                (True, TIMEOUT),
                (True, PARENT),
                (True, MANUAL),
                (False, None),  # the stale ref never sees the new job's cancel
            ]
            table.cancel(root, MANUAL)
            assert ask(conn, "state", [root, grandchild]) == [(True, MANUAL), (True, PARENT)]

            # The child blocks in select() on the doorbell; the ring wakes it.
            conn.send(("wait_bell", BACKSTOP))
            bell.ring()
            assert conn.poll(BACKSTOP)
            assert conn.recv() == (True, 1)
            assert ask(conn, "exit") == "closed"

        run_child(ctx, reader_child, (table, bell), dialogue)


def test_doorbell_wakes_a_job_awaiting_its_shared_token(
    ctx: multiprocessing.context.BaseContext, no_leaks: None
) -> None:
    with TokenTable.create(4) as table, Doorbell() as bell:
        root = table.allocate()
        ref = table.allocate(root)

        def dialogue(conn: multiprocessing.connection.Connection) -> None:
            assert conn.poll(BACKSTOP)
            assert conn.recv() == ("waiting", False)
            # What the supervisor does on pool.cancel(parent): write, then ring.
            SharedToken(table, root).cancel_sync(TIMEOUT)
            bell.ring()
            assert conn.poll(BACKSTOP)
            assert conn.recv() == {
                "synced": [True],  # woken through the doorbell, exactly once
                "reason": PARENT,
                "message": "token cancelled (parent)",
            }

        run_child(ctx, asyncio_child, (table, bell, ref), dialogue)


def test_nothing_is_left_after_close_and_exit(
    ctx: multiprocessing.context.BaseContext, dev_shm: Callable[[], set[str]]
) -> None:
    before = dev_shm()
    table = TokenTable.create(4)
    bell = Doorbell()
    fd = table.fileno()

    def dialogue(conn: multiprocessing.connection.Connection) -> None:
        assert ask(conn, "info")["maps_memfd"]
        assert dev_shm() == before  # anonymous: nothing appears even while in use
        assert ask(conn, "exit") == "closed"

    run_child(ctx, reader_child, (table, bell), dialogue)
    table.close()
    bell.close()
    assert "/memfd:cancelpool-tokens" not in maps_of("self")
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    assert dev_shm() - before == set()


# -- the whole process group SIGKILLed -----------------------------------------------------
SCENARIO = textwrap.dedent(
    """
    import multiprocessing, select, sys
    from cancelpool.shm import Doorbell, TokenTable

    def worker(table, bell, ref, conn):
        conn.send(table.state(ref))
        select.select([bell.fileno()], [], [], {backstop})  # blocks until killed

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[1])
        table = TokenTable.create(16)
        ref = table.allocate()
        table.cancel(ref)
        bell = Doorbell()
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker, args=(table, bell, ref, writer), daemon=True)
        proc.start()
        cancelled, reason = reader.recv()
        print(proc.pid, cancelled, reason.value, flush=True)
        sys.stdin.read()  # until killed (or until the test process goes away)
    """
)


def session_members(sid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def wait_exited(pidfds: list[int], timeout: float) -> bool:
    """Wait until every process behind ``pidfds`` has exited; False at the backstop."""
    deadline = time.monotonic() + timeout
    pending = list(pidfds)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready = select.select(pending, [], [], remaining)[0]
        pending = [fd for fd in pending if fd not in ready]
    return True


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_sigkill_of_the_whole_group_leaves_nothing_in_dev_shm(
    method: str, tmp_path: Path, dev_shm: Callable[[], set[str]]
) -> None:
    before = dev_shm()
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO.format(backstop=BACKSTOP))
    src = str(Path(cancelpool.shm.__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script), method],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group, so it can be killed whole
    )
    pidfds: list[int] = []
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], BACKSTOP)[0], "scenario never got ready"
        worker_pid, cancelled, reason = proc.stdout.readline().split()
        assert (cancelled, reason) == (b"True", b"manual")  # the worker read the slot
        assert "/memfd:cancelpool-tokens" in maps_of(int(worker_pid))
        assert dev_shm() == before

        members = session_members(proc.pid)
        assert int(worker_pid) in members
        pidfds = [os.pidfd_open(pid) for pid in members]
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(BACKSTOP) == -signal.SIGKILL
        assert wait_exited(pidfds, BACKSTOP), "a process of the killed group survived"
    finally:
        for fd in pidfds:
            os.close(fd)
        if proc.returncode is None:  # pragma: no cover - only when the test already failed
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for pipe in (proc.stdout, proc.stdin):
            if pipe is not None:
                pipe.close()

    # The grandchild is dead (a zombie until its new parent reaps it, or gone).
    assert session_members(proc.pid) == []
    assert dev_shm() - before == set()

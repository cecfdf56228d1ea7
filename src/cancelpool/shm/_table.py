"""A fixed-size table of cancellation slots in anonymous shared memory.

The supervisor creates the table; every worker maps the same pages. Each job owns one
slot. The supervisor is the only writer; any process reads a slot with one or two
aligned 8-byte loads, so a cancel written by the supervisor is visible to a worker's
``token.is_cancelled`` at once, even in synchronous code that never awaits.

The memory is a ``memfd`` (anonymous, no name in ``/dev/shm``): it lives exactly as long
as some process holds its fd or a mapping of it, so nothing is left behind however the
processes die. Workers receive the fd when the table is pickled into a
``multiprocessing.Process`` (fork, spawn or forkserver).

Segment layout (native byte order, every field an aligned uint64)::

    offset 0   +--------------------------------------------+
               | header word 0: magic  b"cpTOKv1\\0"          |
               | header word 1: capacity                    |
    offset 16  +--------------------------------------------+
               | slot 0                                     |  16 bytes per slot
               | slot 1                                     |
               | ...                                        |
               +--------------------------------------------+

One slot = two words::

    word 0 (state word, the only word a cancel writes)
     63                              24 23     16 15      8 7       2  1  0
    +----------------------------------+---------+---------+---------+--+--+
    |      generation (40 bits)        |    0    | reason  |    0    |C |A |
    +----------------------------------+---------+---------+---------+--+--+
      A = ACTIVE (allocated), C = CANCELLED, FREE = neither;
      reason = 1 + index of the CancelationReason (0 while not cancelled)

    word 1 (parent link, written only while the slot is being allocated)
     63                              24 23                                 0
    +----------------------------------+-----------------------------------+
    |   parent generation (40 bits)    |      parent slot index (24 bits)  |
    +----------------------------------+-----------------------------------+
      all ones = no parent

State, reason and generation share one aligned word so a reader never sees a torn
update: a slot is either (this generation, cancelled, reason) or it is not. The
generation is bumped when a slot is recycled, so a stale :class:`SlotRef` reads "not
cancelled" and can never cancel, or be cancelled by, the job that reuses the slot.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import sys
import tempfile
import threading
from multiprocessing import reduction
from typing import Any, Final, NamedTuple

from .._core._enums import CancelationReason

# -- layout --------------------------------------------------------------------------------
_HEADER_WORDS: Final = 2
_HEADER_BYTES: Final = 8 * _HEADER_WORDS
_SLOT_WORDS: Final = 2
_SLOT_BYTES: Final = 8 * _SLOT_WORDS
_MAGIC: Final = int.from_bytes(b"cpTOKv1\0", sys.byteorder)

_ACTIVE: Final = 1 << 0
_CANCELLED: Final = 1 << 1
_REASON_SHIFT: Final = 8
_GEN_SHIFT: Final = 24
_GEN_MASK: Final = (1 << 40) - 1
_INDEX_MASK: Final = (1 << 24) - 1
_NO_PARENT: Final = (1 << 64) - 1
#: The largest capacity the 24-bit parent index can address (index 2**24-1 would make a
#: link look like the all-ones "no parent" sentinel).
MAX_CAPACITY: Final = _INDEX_MASK

# Reason codes are positions in the enum, fixed for one installed version of cancelpool,
# which is what supervisor and workers always share.
_REASON_BY_CODE: Final[tuple[CancelationReason | None, ...]] = (None, *CancelationReason)
_CODE_BY_REASON: Final[dict[CancelationReason, int]] = {
    reason: code for code, reason in enumerate(_REASON_BY_CODE) if reason is not None
}
_PARENT: Final = CancelationReason.PARENT


class SlotRef(NamedTuple):
    """The address of one job's slot: its index and the generation it was allocated in.

    Plain data: it pickles to a worker and is what a worker needs (with its attached
    :class:`TokenTable`) to build its :class:`SharedToken`.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index(), on purpose
    generation: int


class TableFull(RuntimeError):
    """Every slot of a :class:`TokenTable` holds a live job."""


class _ClosedWords:
    """Stands in for the word view of a closed table, so a read says what is wrong."""

    __slots__ = ()

    def __getitem__(self, index: int) -> int:
        raise ValueError("this TokenTable is closed")

    def __setitem__(self, index: int, value: int) -> None:
        raise ValueError("this TokenTable is closed")


_CLOSED_WORDS: Final = _ClosedWords()


def _anonymous_fd(size: int) -> int:
    """An fd of ``size`` zeroed bytes of shared memory that has no name anywhere."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("cancelpool-tokens", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            # Nobody may shrink the segment under a reader: a load past the end of a
            # shrunk mapping is a SIGBUS that kills the process.
            fcntl.fcntl(
                fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
            )
        except BaseException:
            os.close(fd)
            raise
        return fd
    # Not Linux: a temporary file unlinked at once (O_TMPFILE where available) is just as
    # nameless; it is page-cache backed rather than tmpfs, which only costs write-back.
    with tempfile.TemporaryFile() as f:  # pragma: no cover - non-Linux fallback
        fd = os.dup(f.fileno())
    os.ftruncate(fd, size)  # pragma: no cover
    return fd  # pragma: no cover


class TokenTable:
    """A fixed-capacity table of cancellation slots shared by a supervisor and workers.

    Create it in the supervisor with :meth:`create`; give it to workers by passing it
    to ``multiprocessing.Process(args=...)`` (or any pickle made while a process is
    being started): the worker gets a read-only-by-convention view of the same memory.

    Writing (:meth:`allocate`, :meth:`release`, :meth:`cancel`) is allowed only in the
    process that created the table; those methods are thread-safe there. Reading
    (:meth:`state`, :meth:`is_cancelled`) works in every process and thread and never
    takes a lock.

    A table is a context manager that :meth:`close`\\ s itself.
    """

    __slots__ = (
        "__weakref__",
        "_capacity",
        "_children",
        "_fd",
        "_free",
        "_lock",
        "_mmap",
        "_next_fresh",
        "_owner_pid",
        "_released",
        "_used",
        "_view",
        "_words",
    )

    _words: Any  # memoryview of uint64 while open, _ClosedWords after close()

    def __init__(self, fd: int, *, writer: bool) -> None:
        """Map the table held by ``fd``; use :meth:`create` or :meth:`attach` instead.

        The table takes ownership of ``fd`` (even when this raises).
        """
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER_BYTES + _SLOT_BYTES or (size - _HEADER_BYTES) % _SLOT_BYTES:
                raise ValueError(f"fd {fd} does not hold a cancelpool token table (size {size})")
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        view = memoryview(mm)
        header = view[:_HEADER_BYTES].cast("Q")
        capacity = (size - _HEADER_BYTES) // _SLOT_BYTES
        ok = header[0] == _MAGIC and header[1] == capacity
        header.release()
        if not ok and not writer:
            view.release()
            mm.close()
            os.close(fd)
            raise ValueError(f"fd {fd} does not hold a cancelpool token table (bad header)")
        self._fd = fd
        self._mmap = mm
        self._view = view
        self._words = view[_HEADER_BYTES:].cast("Q")
        self._capacity = capacity
        self._owner_pid = os.getpid() if writer else 0
        self._lock = threading.Lock()
        # Supervisor-side bookkeeping (meaningless in workers): slots never used yet are
        # handed out from _next_fresh, recycled ones from _free (most recent first, its
        # cache lines are warm). _children counts live children per slot; a released
        # slot that still has live children waits in _released, readable, so that they
        # keep seeing its cancellation until the last of them is released.
        self._next_fresh = 0
        self._free: list[int] = []
        self._children: dict[int, int] = {}
        self._released: set[int] = set()
        self._used = 0

    # -- construction --------------------------------------------------------------------
    @classmethod
    def create(cls, capacity: int) -> TokenTable:
        """Create a table of ``capacity`` free slots in a new anonymous segment.

        The calling process becomes the table's only writer.

        Raises:
            ValueError: ``capacity`` is not between 1 and :data:`MAX_CAPACITY`.
        """
        if not isinstance(capacity, int) or not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(
                f"TokenTable capacity must be an int between 1 and {MAX_CAPACITY}, not {capacity!r}"
            )
        fd = _anonymous_fd(_HEADER_BYTES + capacity * _SLOT_BYTES)
        table = cls(fd, writer=True)
        header = table._view[:_HEADER_BYTES].cast("Q")
        header[1] = capacity
        header[0] = _MAGIC
        header.release()
        return table

    @classmethod
    def attach(cls, fd: int) -> TokenTable:
        """Map an existing table from an fd received from its creator (reader view).

        The table takes ownership of ``fd`` and closes it in :meth:`close`. Pickling
        the table (into a ``multiprocessing.Process``) does this for you.

        Raises:
            ValueError: ``fd`` does not hold a token table.
        """
        os.set_inheritable(fd, False)
        return cls(fd, writer=False)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._words is _CLOSED_WORDS:
            raise ValueError("cannot pickle a closed TokenTable")
        # DupFd sends the fd the way the start method needs: inherited through
        # pass_fds under spawn, over the forkserver's unix socket under forkserver,
        # through multiprocessing's resource sharer when pickled for a running process.
        # Under fork the Process object is not pickled at all: the child inherits the
        # table, and :attr:`writer` turns False there because the pid differs.
        return (_rebuild_table, (reduction.DupFd(self._fd),))

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap the table and close its fd in this process. Idempotent.

        Other processes keep their own mappings; the memory is freed by the kernel
        when the last of them closes or exits.
        """
        with self._lock:
            words = self._words
            if words is _CLOSED_WORDS:
                return
            self._words = _CLOSED_WORDS
            words.release()
            self._view.release()
            self._mmap.close()
            os.close(self._fd)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._words is _CLOSED_WORDS

    def __enter__(self) -> TokenTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Close the fd of a table dropped without close(); the mmap closes itself.
        try:
            self.close()
        except Exception:
            pass

    def fileno(self) -> int:
        """The fd of the segment in this process (for passing it by hand)."""
        if self._words is _CLOSED_WORDS:
            raise ValueError("this TokenTable is closed")
        return self._fd

    # -- introspection -------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """The number of slots."""
        return self._capacity

    @property
    def writer(self) -> bool:
        """True in the process that created the table: the only one that may write it.

        False in workers, including children forked from the creator.
        """
        return self._owner_pid == os.getpid()

    @property
    def used(self) -> int:
        """The number of slots not free (live jobs, plus released parents kept for
        their live children). O(1) in the writer, O(capacity) in a reader."""
        if self.writer:
            return self._used
        words = self._words
        return sum(1 for i in range(0, self._capacity * _SLOT_WORDS, _SLOT_WORDS) if words[i] & 1)

    def __repr__(self) -> str:
        if self.closed:
            return f"<TokenTable closed at {id(self):#x}>"
        role = "writer" if self.writer else "reader"
        return f"<TokenTable {role} capacity={self._capacity} used={self.used} at {id(self):#x}>"

    # -- reading (any process, any thread, lock-free) ------------------------------------
    def is_cancelled(self, ref: SlotRef) -> bool:
        """True if the job at ``ref``, or any live ancestor of it, is cancelled.

        A stale ``ref`` (its slot was released) reads False. Costs one load for a
        cancelled slot, two for a live one without parent, two more per ancestor.
        """
        words = self._words
        index, generation = ref
        base = index << 1
        word = words[base]
        if word >> _GEN_SHIFT != generation:
            return False
        if word & _CANCELLED:
            return True
        link = words[base + 1]
        if link == _NO_PARENT:
            return False
        return self._ancestor_cancelled(words, base, generation, link)

    def state(self, ref: SlotRef) -> tuple[bool, CancelationReason | None]:
        """``(cancelled, reason)`` of the job at ``ref``.

        The reason is the slot's own when the slot itself is cancelled, PARENT when
        only an ancestor is. A stale ``ref`` reads ``(False, None)``.
        """
        words = self._words
        index, generation = ref
        base = index << 1
        word = words[base]
        if word >> _GEN_SHIFT != generation:
            return False, None
        if word & _CANCELLED:
            return True, _REASON_BY_CODE[(word >> _REASON_SHIFT) & 0xFF]
        link = words[base + 1]
        if link != _NO_PARENT and self._ancestor_cancelled(words, base, generation, link):
            return True, _PARENT
        return False, None

    def _ancestor_cancelled(self, words: Any, base: int, generation: int, link: int) -> bool:
        # Walk the parent links. After reading a slot's link, its state word is read
        # again: if its generation changed meanwhile, the link may belong to the next
        # job in that slot, so the walk stops. (The writer bumps the generation before
        # it rewrites a link; x86-64 keeps both stores and loads in order.)
        if words[base] >> _GEN_SHIFT != generation:
            return False
        hops = self._capacity  # the links cannot loop, but never trust shared memory
        while link != _NO_PARENT and hops:
            base = (link & _INDEX_MASK) << 1
            word = words[base]
            if (word ^ link) >> _GEN_SHIFT:
                return False  # the ancestor was released: the chain ends here
            if word & _CANCELLED:
                return True
            generation = link >> _GEN_SHIFT
            link = words[base + 1]
            if words[base] >> _GEN_SHIFT != generation:
                return False
            hops -= 1
        return False

    def is_live(self, ref: SlotRef) -> bool:
        """True while the slot holds ``ref``'s generation, allocated.

        False once ``ref`` is released, except for a released parent that is kept
        readable for its live children (see :meth:`release`).
        """
        self._check_index(ref.index)
        word = self._words[ref.index << 1]
        return bool(word & _ACTIVE) and word >> _GEN_SHIFT == ref.generation

    # -- writing (the creating process only) ---------------------------------------------
    def allocate(self, parent: SlotRef | None = None) -> SlotRef:
        """Take a free slot for a new job, optionally the child of ``parent``.

        The new slot reads cancelled at once if ``parent`` (or one of its ancestors) is
        already cancelled. A ``parent`` that was already released links to nothing.

        Raises:
            TableFull: every slot holds a live job.
            RuntimeError: called outside the process that created the table.
            ValueError: ``parent`` is out of range.
        """
        self._check_writer("allocate")
        if parent is not None:
            self._check_index(parent.index)
        with self._lock:
            words = self._words
            if self._free:
                index = self._free.pop()
            elif self._next_fresh < self._capacity:
                index = self._next_fresh
                self._next_fresh += 1
            else:
                raise TableFull(
                    f"all {self._capacity} slots of the TokenTable hold live jobs: create "
                    f"it with a larger capacity (e.g. capacity={2 * self._capacity}) or "
                    "wait for running jobs to finish"
                )
            base = index << 1
            generation = words[base] >> _GEN_SHIFT
            link = _NO_PARENT
            if parent is not None:
                pbase = parent.index << 1
                pword = words[pbase]
                if pword & _ACTIVE and pword >> _GEN_SHIFT == parent.generation:
                    link = (parent.generation << _GEN_SHIFT) | parent.index
                    self._children[parent.index] = self._children.get(parent.index, 0) + 1
            # The link first, then the state word that makes the slot live.
            words[base + 1] = link
            words[base] = (generation << _GEN_SHIFT) | _ACTIVE
            self._used += 1
            return SlotRef(index, generation)

    def release(self, ref: SlotRef) -> bool:
        """Give the slot of a finished job back. Returns False if ``ref`` is stale.

        Its generation is bumped, so ``ref`` reads not-cancelled from now on. If the job
        still has live children, the slot stays readable, so they keep seeing its
        cancellation, and is recycled when the last of them is released.

        Raises:
            RuntimeError: called outside the process that created the table.
            ValueError: ``ref`` is out of range.
        """
        self._check_writer("release")
        self._check_index(ref.index)
        with self._lock:
            words = self._words
            word = words[ref.index << 1]
            if not word & _ACTIVE or word >> _GEN_SHIFT != ref.generation:
                return False
            if ref.index in self._released:
                return False
            if self._children.get(ref.index):
                self._released.add(ref.index)
            else:
                self._free_slot(words, ref.index)
            return True

    def _free_slot(self, words: Any, index: int) -> None:
        # Called with the lock held; frees ``index`` and any released ancestor whose
        # last live child it was.
        while True:
            base = index << 1
            link = words[base + 1]
            generation = ((words[base] >> _GEN_SHIFT) + 1) & _GEN_MASK
            words[base] = generation << _GEN_SHIFT  # FREE, next generation
            words[base + 1] = _NO_PARENT
            self._free.append(index)
            self._used -= 1
            if link == _NO_PARENT:
                return
            parent = link & _INDEX_MASK
            pword = words[parent << 1]
            if (pword ^ link) >> _GEN_SHIFT or not pword & _ACTIVE:
                return
            left = self._children[parent] - 1
            if left:
                self._children[parent] = left
                return
            del self._children[parent]
            if parent not in self._released:
                return
            self._released.discard(parent)
            index = parent

    def cancel(self, ref: SlotRef, reason: CancelationReason = CancelationReason.MANUAL) -> bool:
        """Mark the job at ``ref`` cancelled, visible at once in every process.

        Its descendants read cancelled too (reason PARENT) through their parent
        links; waking the event loops that wait on them is the caller's business.
        Returns False if the slot is already cancelled or ``ref`` is stale.

        Raises:
            RuntimeError: called outside the process that created the table.
            ValueError: ``ref`` is out of range.
        """
        self._check_writer("cancel")
        self._check_index(ref.index)
        code = _CODE_BY_REASON[CancelationReason(reason)]
        with self._lock:
            words = self._words
            base = ref.index << 1
            word = words[base]
            if word >> _GEN_SHIFT != ref.generation or word & (_ACTIVE | _CANCELLED) != _ACTIVE:
                return False
            if ref.index in self._released:
                return False
            words[base] = word | _CANCELLED | (code << _REASON_SHIFT)
            return True

    def _check_writer(self, what: str) -> None:
        if self._owner_pid != os.getpid():
            raise RuntimeError(
                f"TokenTable.{what}() can only be called in the process that created the "
                "table; workers only read it and report to the supervisor"
            )

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._capacity:
            raise ValueError(
                f"slot index {index} is out of range for a TokenTable of {self._capacity} slots"
            )


def _rebuild_table(dupfd: Any) -> TokenTable:
    return TokenTable.attach(dupfd.detach())


for _obj in (SlotRef, TableFull, TokenTable):
    _obj.__module__ = "cancelpool.shm"
del _obj

"""The wire between the supervisor and its workers: typed msgspec messages over pipes.

Every write is one *frame*: a 4-byte little-endian length, then a msgpack array of
messages (a batch). Messages are msgspec Structs in a tagged union, encoded as arrays
(no field names on the wire). Functions, arguments, results, exceptions and partial
results are arbitrary Python objects: they travel as pickled bytes inside a message.
Progress metadata is plain data and is encoded by msgspec directly.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgspec

# -- supervisor -> worker -------------------------------------------------------------------


class JobTrace(msgspec.Struct, array_like=True, frozen=True):
    """A traced job's submitter context (see ``_tracing``) and which attempt this is."""

    context: str
    attempt: int


class Run(msgspec.Struct, tag=1, array_like=True, frozen=True):
    """Start a job. ``fn`` and ``args`` are pickles; ``fn`` is shared by many jobs."""

    job: int
    slot: int
    generation: int
    fn: bytes
    args: bytes
    name: str | None
    timeout: float | None
    is_async: bool
    #: Set only when the submitter was traced (OpenTelemetry): one nil byte otherwise.
    trace: JobTrace | None = None


class Stop(msgspec.Struct, tag=2, array_like=True, frozen=True):
    """Exit once the running jobs are done (the supervisor sends it when idle)."""


# -- worker -> supervisor -------------------------------------------------------------------


class Started(msgspec.Struct, tag=10, array_like=True, frozen=True):
    """The job passed its last cancellation check and is running."""

    job: int


class Done(msgspec.Struct, tag=11, array_like=True, frozen=True):
    """The job returned; ``result`` is its pickle."""

    job: int
    result: bytes


class Failed(msgspec.Struct, tag=12, array_like=True, frozen=True):
    """The job raised; ``error`` is the exception's pickle, ``traceback`` its text."""

    job: int
    error: bytes
    traceback: str


class Cancelled(msgspec.Struct, tag=13, array_like=True, frozen=True):
    """The job stopped on cancellation (``started`` False: it never ran)."""

    job: int
    reason: str
    message: str
    partial: bytes | None
    started: bool


class InitFailed(msgspec.Struct, tag=16, array_like=True, frozen=True):
    """The pool's initializer raised in this worker, which exits: ``error`` is the
    exception's pickle, ``traceback`` its text."""

    error: bytes
    traceback: str


class InitDone(msgspec.Struct, tag=22, array_like=True, frozen=True):
    """The pool's initializer returned in this worker (sent only when there is one):
    a worker that dies before it says so died in its initializer."""


class Progress(msgspec.Struct, tag=14, array_like=True, frozen=True):
    """A progress report from inside a job."""

    job: int
    op_id: str
    message: str
    metadata: msgspec.Raw


class Warm(msgspec.Struct, tag=7, array_like=True, frozen=True):
    """Unpickle these job functions now (importing their modules): a spare worker gets
    them so that it runs its first job as fast as a worker that has run them before."""

    functions: list[bytes]


class ChildAccepted(msgspec.Struct, tag=3, array_like=True, frozen=True):
    """A child job a worker asked for was submitted under id ``job``."""

    request: int
    job: int


class ChildRefused(msgspec.Struct, tag=4, array_like=True, frozen=True):
    """A child job could not be submitted; ``error`` is the exception's pickle."""

    request: int
    error: bytes


class ChildOutcome(msgspec.Struct, tag=5, array_like=True, frozen=True):
    """How a child job ended: ``outcome`` is a Done, Failed or Cancelled message."""

    request: int
    outcome: Done | Failed | Cancelled


class ChildProgress(msgspec.Struct, tag=6, array_like=True, frozen=True):
    """A child's progress report, for the parent job's own callbacks."""

    parent: int
    child: int
    message: str
    metadata: msgspec.Raw


class SubmitChild(msgspec.Struct, tag=20, array_like=True, frozen=True):
    """A job asks for a child job (``current_pool().submit`` in the worker)."""

    request: int
    parent: int
    fn: bytes
    args: bytes
    name: str | None
    timeout: float | None
    is_async: bool
    #: The parent job's trace context, when it is traced (see ``Run.trace``).
    trace: str | None = None


class CancelChild(msgspec.Struct, tag=21, array_like=True, frozen=True):
    """A job cancels one of its children."""

    request: int
    message: str | None


class Checkpoint(msgspec.Struct, tag=15, array_like=True, frozen=True):
    """The job's latest partial result (pickled), kept in case its worker dies."""

    job: int
    partial: bytes


class LoopBlocked(msgspec.Struct, tag=17, array_like=True, frozen=True):
    """The worker's event loop has not turned for ``seconds``: ``job`` holds it (None
    if the code running is not a job's own task) and ``stack`` is where it is. Sent by
    the worker's watchdog thread, while the loop is still blocked."""

    job: int | None
    seconds: float
    stack: str


class LoopResumed(msgspec.Struct, tag=18, array_like=True, frozen=True):
    """The worker's event loop turns again, after being blocked for ``seconds``."""

    seconds: float


class BellHeard(msgspec.Struct, tag=19, array_like=True, frozen=True):
    """The worker's loop drained its doorbell: ``count`` rings in all since the worker
    started (sent only with a watchdog: a forced stop then knows whether the loop
    heard the ring that cancelled its job; see ``_loop_state``)."""

    count: int


ToWorker = Run | Stop | Warm | ChildAccepted | ChildRefused | ChildOutcome | ChildProgress
FromWorker = (
    Started
    | Done
    | Failed
    | Cancelled
    | Progress
    | Checkpoint
    | SubmitChild
    | CancelChild
    | InitFailed
    | InitDone
    | LoopBlocked
    | LoopResumed
    | BellHeard
)

_HEADER: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size
#: Frames above this size are refused: a corrupt length must not make us allocate GBs.
MAX_FRAME: Final = 1 << 30
#: The largest pickle one message may carry (arguments, a result, a partial result):
#: half a frame, leaving room for the rest of its batch.
MAX_PAYLOAD: Final = MAX_FRAME // 2

encoder = msgspec.msgpack.Encoder()
to_worker_decoder = msgspec.msgpack.Decoder(list[ToWorker])
from_worker_decoder = msgspec.msgpack.Decoder(list[FromWorker])


def frame(messages: list[Any]) -> bytes:
    """Encode a batch of messages as one length-prefixed frame."""
    payload = encoder.encode(messages)
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Cuts a byte stream into frames; feed it whatever ``read()`` returned."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[memoryview]:
        """Append ``data``; return the payloads of the frames now complete."""
        buffer = self._buffer
        buffer += data
        frames: list[memoryview] = []
        start = 0
        end = len(buffer)
        while end - start >= HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME:
                raise ValueError(f"corrupt frame on the pipe (length {size})")
            if end - start - HEADER_SIZE < size:
                break
            start += HEADER_SIZE
            frames.append(memoryview(bytes(buffer[start : start + size])))
            start += size
        if start:
            del buffer[:start]
        return frames

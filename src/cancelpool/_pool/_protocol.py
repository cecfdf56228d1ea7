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


class Stop(msgspec.Struct, tag=2, array_like=True, frozen=True):
    """Finish the running jobs' cancellation, then exit."""


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


class Progress(msgspec.Struct, tag=14, array_like=True, frozen=True):
    """A progress report from inside a job."""

    job: int
    op_id: str
    message: str
    metadata: msgspec.Raw


ToWorker = Run | Stop
FromWorker = Started | Done | Failed | Cancelled | Progress

_HEADER: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size
#: Frames above this size are refused: a corrupt length must not make us allocate GBs.
MAX_FRAME: Final = 1 << 30

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

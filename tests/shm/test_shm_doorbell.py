"""Doorbell in one process: ring, drain, saturation, close."""

from __future__ import annotations

import os
import select

import pytest

from cancelpool.shm import Doorbell


def readable(bell: Doorbell) -> bool:
    return bool(select.select([bell.fileno()], [], [], 0)[0])


def test_ring_makes_it_readable_and_drain_consumes() -> None:
    with Doorbell() as bell:
        assert not readable(bell)
        assert bell.drain() == 0
        bell.ring()
        bell.ring()
        assert readable(bell)
        assert bell.drain() == 2  # rings coalesce into one wake-up
        assert not readable(bell)
        assert bell.drain() == 0


def test_ring_never_raises_when_the_channel_is_full() -> None:
    with Doorbell() as bell:
        if bell._eventfd:
            os.eventfd_write(bell.fileno(), 0xFFFF_FFFF_FFFF_FFFE)  # counter at its max
        else:  # pragma: no cover - pipe fallback
            while True:
                try:
                    os.write(bell._wfd, b"\0" * 65536)
                except BlockingIOError:
                    break
        bell.ring()
        bell.ring()
        assert readable(bell)
        assert bell.drain() > 0
        assert not readable(bell)


def test_fds_are_nonblocking_and_not_inherited() -> None:
    with Doorbell() as bell:
        assert not os.get_blocking(bell.fileno())
        assert not os.get_inheritable(bell.fileno())


def test_close_is_idempotent_and_ring_after_close_is_a_no_op() -> None:
    bell = Doorbell()
    fd = bell.fileno()
    bell.close()
    bell.close()
    assert bell.closed
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    bell.ring()
    assert bell.drain() == 0
    with pytest.raises(ValueError, match="closed"):
        bell.fileno()
    assert "closed" in repr(bell)

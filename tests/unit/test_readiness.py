"""teguh._readiness.readable: poll() where select() would refuse the descriptor."""

from __future__ import annotations

import os
import socket
import time

import pytest

from teguh._readiness import readable


def test_readable_reports_data_and_hang_ups() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert readable([a], 0) == []
        b.send(b"x")
        assert readable([a, b], 0) == [a]
        a.recv(1)
        b.close()
        assert readable([a], 0) == [a]  # end of file reads as readable


def test_readable_waits_up_to_the_timeout() -> None:
    a, b = socket.socketpair()
    with a, b:
        started = time.monotonic()
        assert readable([a.fileno()], 0.05) == []
        assert time.monotonic() - started >= 0.04


def test_a_descriptor_past_the_select_limit_is_polled() -> None:
    # select() refuses descriptors >= FD_SETSIZE (1024); a process with many
    # files open hands those out, to pools and to the worker's wake-up socket
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1500:
        pytest.skip(f"descriptors are limited to {hard}")
    if soft != resource.RLIM_INFINITY and soft <= 1500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1501, hard))
    a, b = socket.socketpair()
    try:
        high = os.dup2(a.fileno(), 1500)
        try:
            assert readable([high], 0) == []
            b.send(b"x")
            assert readable([high], 0) == [high]
        finally:
            os.close(high)
    finally:
        a.close()
        b.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

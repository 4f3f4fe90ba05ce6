"""Shared pytest fixtures for spfgate's end-to-end tests.

The tests start real programs from the build tree (SPFGATE_BUILDDIR,
default ./build) on loopback addresses.
"""
import os
import pathlib
import socket
import time

import pytest

SRCDIR = pathlib.Path(__file__).resolve().parents[2]
BUILDDIR = pathlib.Path(os.environ.get("SPFGATE_BUILDDIR", SRCDIR / "build"))


@pytest.fixture(scope="session")
def builddir():
    return BUILDDIR


@pytest.fixture(scope="session")
def srcdir():
    return SRCDIR


def free_port(host="127.0.0.1", kind=socket.SOCK_STREAM):
    """A port the kernel says is free right now on host."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_both(host="127.0.0.1"):
    """A port free for both UDP and TCP (for DNS servers)."""
    for _ in range(50):
        p = free_port(host, socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, p))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port")


def poll(cond, timeout=20, what="condition", step=0.05):
    """cond() until it returns something true, which is returned; bounded
    by timeout seconds, then the test fails."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)

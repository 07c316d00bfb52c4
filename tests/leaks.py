"""A check that a test leaves nothing running: no thread, child process or socket it started.

Used as an autouse fixture by the protocol tests (field simulator, Modbus, IEC 104, MQTT): a
server or client that outlives its test keeps working in the background of the next ones,
steals their CPU and can make their timing fail, far from the cause.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: How long things a test stopped may take to wind down (thread joins, socket closes) on a busy machine.
GRACE_S = 10.0


def _children() -> set[int]:
    """Child process ids of this process (any of its threads), from /proc."""
    pid = os.getpid()
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # no /proc: nothing to check
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                found.update(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _sockets() -> set[str]:
    """The sockets this process holds open, as /proc names them (``socket:[inode]``)."""
    found: set[str] = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


@contextmanager
def assert_no_leaks(grace_s: float = GRACE_S) -> Iterator[None]:
    """Fail when threads, child processes or sockets opened inside the block outlive it (after ``grace_s``)."""
    threads = {t.ident for t in threading.enumerate()}
    children = _children()
    sockets = _sockets()
    yield
    deadline = time.monotonic() + grace_s
    while True:
        extra_threads = [t.name for t in threading.enumerate() if t.ident not in threads and t.is_alive()]
        extra_children = _children() - children
        extra_sockets = _sockets() - sockets
        if not (extra_threads or extra_children or extra_sockets):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"left running after the test: threads {extra_threads}, child processes "
                f"{sorted(extra_children)}, sockets {sorted(extra_sockets)}"
            )
        time.sleep(0.05)

"""Admission control for password hashing: a login flood must not starve the control room.

An argon2id verification costs 64 MiB and a few tenths of a second of CPU on purpose. Run for
every request as it comes, 64 concurrent logins with made-up names took 2.4 GB and both cores,
a real login took 8 s and the real-time cycle overran. So every request that hashes a password
(login, token, password change, user management) passes a :class:`LoginGate` first:

1. **Rate limits** (token buckets, checked in the event loop before any work): per source
   address (``per_source_per_minute``, bursts of ``per_source_burst``) and over all sources
   (``overall_per_minute``, ``overall_burst``). Over a limit the request gets HTTP 429 with a
   ``Retry-After`` saying when the bucket has a token again (RFC 6585 section 4). The
   per-source table is bounded: idle sources are dropped first.
2. **Bounded hashing**: at most ``concurrent_hashes`` hashes run at once, in the gate's own
   worker threads (never the thread pool that serves the read endpoints), and at most
   ``queue`` more wait; a request that would wait longer than that is refused with 429 too.
   Memory is therefore bounded by ``concurrent_hashes`` x argon2's memory cost.
3. **Low priority**: the workers lower their own scheduling priority (Linux ``nice`` is per
   thread, and the argon2 lanes the worker starts inherit it), so the real-time cycle and the
   API get the CPU first and hashing takes what is left.

The benchmark ``benchmarks/bench_login_flood.py`` measures the status endpoint's p99 and the
cycle time during a 200-request flood beside the idle figures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from opendso.errors import ThrottledError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class LoginLimits:
    """Rates, concurrency and queue of the gate (see the module docstring)."""

    per_source_per_minute: float = 20.0  # consoles behind one NAT address share it: a shift change fits
    per_source_burst: int = 10
    overall_per_minute: float = 120.0
    overall_burst: int = 30
    concurrent_hashes: int = 1
    queue: int = 8
    nice: int = 10  # added to the hashing threads' nice value (0: leave it)
    max_sources: int = 10_000


class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one token; return 0 on success, else the seconds until one is there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else math.inf

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.capacity


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's priority (Linux: per thread; elsewhere nothing happens)."""
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: hashing still works
        log.info("event=hash_priority_unchanged reason=%r", exc)


class LoginGate:
    """Rate limits and bounded, low-priority hashing for requests that hash passwords."""

    def __init__(self, limits: LoginLimits | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or LoginLimits()
        self.clock = clock
        lim = self.limits
        self._overall = _Bucket(lim.overall_burst, lim.overall_per_minute / 60.0, clock())
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, lim.concurrent_hashes),
            thread_name_prefix="password-hash",
            initializer=_lower_priority,
            initargs=(lim.nice,),
        )
        self._in_flight = 0
        self.refused = 0  # requests refused with 429 since start

    def admit(self, source: str | None) -> None:
        """Take a token for ``source`` and one overall; raise :class:`ThrottledError` (429) when out."""
        lim = self.limits
        now = self.clock()
        key = source or "?"
        with self._lock:
            bucket = self._sources.get(key)
            if bucket is None:
                if len(self._sources) >= lim.max_sources:
                    self._forget_idle(now)
                bucket = self._sources[key] = _Bucket(lim.per_source_burst, lim.per_source_per_minute / 60.0, now)
            else:
                self._sources.move_to_end(key)
            wait = bucket.take(now)
            if wait > 0:
                self.refused += 1
                raise ThrottledError(
                    f"too many login attempts from {key}: try again in {math.ceil(wait)} s", math.ceil(wait)
                )
            wait = self._overall.take(now)
            if wait > 0:
                bucket.tokens = min(bucket.capacity, bucket.tokens + 1.0)  # not this source's fault
                self.refused += 1
                raise ThrottledError(
                    f"the service is busy with logins: try again in {math.ceil(wait)} s", math.ceil(wait)
                )

    def _forget_idle(self, now: float) -> None:
        """Drop full (idle) buckets, oldest first; if none is idle, the oldest."""
        for key in [k for k, b in self._sources.items() if b.full(now)]:
            del self._sources[key]
        while len(self._sources) >= self.limits.max_sources:
            self._sources.popitem(last=False)

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run ``fn`` (which hashes) in a gate worker; raise :class:`ThrottledError` when the queue is full."""
        lim = self.limits
        with self._lock:
            if self._in_flight >= lim.concurrent_hashes + lim.queue:
                self.refused += 1
                raise ThrottledError("the service is busy with logins: try again in 2 s", 2)
            self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        finally:
            with self._lock:
                self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        """Hashing requests running or waiting."""
        return self._in_flight

    def close(self) -> None:
        """Stop the workers (waiting for the hashes that run)."""
        with contextlib.suppress(RuntimeError):
            self._executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["LoginGate", "LoginLimits"]

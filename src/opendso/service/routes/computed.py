"""Results computed on demand in a worker thread and served again for a while: one cache per app and name.

The congestion forecast, the operating envelopes and the TSO day-ahead report take seconds of
batch power flows; a control room of many screens asks for the same one. :func:`computed` runs
the computation in a worker thread (never on the event loop), one at a time per cache (other
requests wait in their worker thread, then find the result), and keeps each result for
``ttl_s`` per key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import anyio
from fastapi import Request

__all__ = ["ComputeCache", "cache_of", "computed"]

_STATE = threading.Lock()  # guards the creation of an app's caches only (taken on the event loop, briefly)


class ComputeCache:
    """Results by key: key -> (monotonic time, result); ``lock`` lets one computation run at a time."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.entries: dict[Hashable, tuple[float, Any]] = {}
        self.lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The result of ``key``, computed by ``compute`` (in the calling thread) when absent or older than the TTL."""
        with self.lock:
            now = time.monotonic()
            held = self.entries.get(key)
            if held is not None and now - held[0] < self.ttl_s:
                return held[1]
            result = compute()
            self.entries = {k: v for k, v in self.entries.items() if now - v[0] < self.ttl_s}
            self.entries[key] = (time.monotonic(), result)
            return result

    def latest(self, match: Callable[[Hashable], bool]) -> Any | None:
        """The newest result still held whose key satisfies ``match`` (None: none)."""
        with self.lock:
            now = time.monotonic()
            found = [(t, v) for k, (t, v) in self.entries.items() if now - t < self.ttl_s and match(k)]
        return max(found, key=lambda tv: tv[0])[1] if found else None


def cache_of(request: Request, name: str, ttl_s: float) -> ComputeCache:
    """The app's cache called ``name`` (created on first use with ``ttl_s``)."""
    state = request.app.state
    with _STATE:
        caches: dict[str, ComputeCache] | None = getattr(state, "computed", None)
        if caches is None:
            caches = state.computed = {}
        cache = caches.get(name)
        if cache is None:
            cache = caches[name] = ComputeCache(ttl_s)
    return cache


async def computed(cache: ComputeCache, key: Hashable, compute: Callable[[], Any]) -> Any:
    """:meth:`ComputeCache.get` in a worker thread."""
    return await anyio.to_thread.run_sync(cache.get, key, compute)

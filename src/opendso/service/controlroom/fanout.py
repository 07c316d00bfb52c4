"""The WebSocket fan-out: one outbox per client, filled from any thread, drained in the client's loop.

:class:`Fanout` keeps the subscribers (an :class:`Outbox` and the event loop that drains it).
:meth:`Fanout.send` and :meth:`Fanout.send_text` may be called from any thread (the real-time
cycle runs in a worker thread): each message is serialised once and handed to every
subscriber's loop with ``call_soon_threadsafe``. A subscriber whose loop has closed is dropped.

An :class:`Outbox` conflates: a ``state`` or ``status`` message replaces the one of its kind
still waiting, so a slow client is shown the newest state rather than a growing backlog (as
in SCADA display servers); ``alarm`` messages queue in order and, past the limit, the oldest
is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["CONFLATED", "SUBSCRIBER_QUEUE", "Fanout", "Outbox"]

log = logging.getLogger(__name__)

#: Messages one client may have waiting before the oldest alarm message is dropped.
SUBSCRIBER_QUEUE = 256
#: Message kinds where only the newest matters: a client that falls behind gets the latest, not a backlog.
CONFLATED = frozenset({"state", "status"})


class Outbox:
    """What one WebSocket client has still to receive (used in the client's event loop).

    Alarm messages queue in order (the oldest is dropped past ``limit``); a state or status
    message replaces the one of its kind still waiting, so a slow client is shown the newest
    state rather than a growing backlog of old ones (conflation, as in SCADA display servers).
    """

    def __init__(self, limit: int = SUBSCRIBER_QUEUE) -> None:
        self.limit = limit
        self._items: collections.deque[tuple[str, str]] = collections.deque()
        self._ready = asyncio.Event()
        self.conflated = 0  # messages replaced by a newer one before they were sent
        self.dropped = 0  # alarm messages lost because the client fell too far behind

    def offer(self, kind: str, text: str) -> None:
        """Add a message (JSON text) of a kind (``state``, ``status``, ``alarm``)."""
        if kind in CONFLATED:
            for k, (waiting, _) in enumerate(self._items):
                if waiting == kind:
                    del self._items[k]
                    self.conflated += 1
                    break
        self._items.append((kind, text))
        if len(self._items) > self.limit:
            self._items.popleft()
            self.dropped += 1
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> str:
        """The next message to send (waits for one)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()[1]


@dataclass(frozen=True, slots=True)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    outbox: Outbox


class Fanout:
    """The live subscribers and the one way to send them a message (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []

    def subscribe(self) -> Outbox:
        """Return an outbox that receives every message from now on (call from the subscriber's event loop)."""
        outbox = Outbox()
        subscriber = _Subscriber(asyncio.get_running_loop(), outbox)
        with self._lock:
            self._subscribers.append(subscriber)
            count = len(self._subscribers)
        log.info("event=subscriber_added subscribers=%d", count)
        return outbox

    def unsubscribe(self, outbox: Outbox) -> None:
        """Stop sending to an outbox (unknown outboxes are ignored)."""
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s.outbox is not outbox]

    def __len__(self) -> int:
        """How many clients listen."""
        return len(self._subscribers)

    def send(self, message: dict[str, Any]) -> None:
        """Serialise ``message`` (its ``type`` is the kind) once and offer it to every subscriber."""
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
        self.send_text(message["type"], text)

    def send_text(self, kind: str, text: str | bytes) -> None:
        """Offer a message already serialised (JSON text) of ``kind`` to every subscriber (any thread)."""
        with self._lock:
            subscribers = list(self._subscribers)
        if not subscribers:
            return
        body = text.decode() if isinstance(text, bytes) else text
        for sub in subscribers:
            if sub.loop.is_closed():
                self.unsubscribe(sub.outbox)
                continue
            sub.loop.call_soon_threadsafe(sub.outbox.offer, kind, body)

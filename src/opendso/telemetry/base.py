"""The transport seam: measurements, adapter counters and the base class every adapter follows.

Every protocol adapter (Modbus TCP, MQTT, IEC 60870-5-104, ...) derives from
:class:`TelemetryAdapter`: it is started and stopped (``async with adapter:``), and it hands
out measurements in batches, either by ``async for batch in adapter.batches()`` or through a
callback given at construction. :class:`InProcessAdapter` is the in-process implementation for
fast unit tests of whatever consumes measurements (historian, real-time cycle, alarms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from opendso.measurement import Measurement
from opendso.telemetry.quality import Quality

__all__ = ["AdapterCounters", "BatchCallback", "InProcessAdapter", "Measurement", "TelemetryAdapter", "utc_now"]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class AdapterCounters:
    """What an adapter has seen since it started; every bad input is counted, none is fatal.

    ``received``: measurements handed out (any quality); ``invalid``: measurements handed out
    with quality IV, plus messages that could not be read at all; ``unknown``: values naming a
    point (or address) that is not in the point map; ``duplicate``: telegrams whose sequence
    number was seen before; ``gaps``: sequence numbers missed (a late arrival closes one);
    ``late``: telegrams that arrived after a later one; ``errors``: protocol errors
    (exceptions, wrong lengths, timeouts); ``reconnects``: successful reconnections.
    """

    received: int = 0
    invalid: int = 0
    unknown: int = 0
    duplicate: int = 0
    gaps: int = 0
    late: int = 0
    errors: int = 0
    reconnects: int = 0
    messages: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict (for logs and the API)."""
        return {k: int(getattr(self, k)) for k in self.__dataclass_fields__}


#: A callback that receives each batch of measurements as it is produced.
BatchCallback = Callable[[list[Measurement]], Awaitable[None] | None]


@dataclass
class TelemetryAdapter:
    """Base of every telemetry adapter: lifecycle, batch delivery and counters.

    Subclasses implement :meth:`_run` (the protocol loop, cancelled on :meth:`stop`) and call
    :meth:`_publish` with each batch. Batches go to ``on_batch`` when given, else to a queue
    read by :meth:`batches` / :meth:`next_batch`; the queue is unbounded so no measurement is
    ever dropped for lack of a reader.
    """

    name: str
    on_batch: BatchCallback | None = None
    counters: AdapterCounters = field(default_factory=AdapterCounters)
    _queue: asyncio.Queue[list[Measurement]] = field(default_factory=asyncio.Queue, init=False, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the adapter's protocol loop in the background."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._guarded_run(), name=f"telemetry-{self.name}")
        log.info("event=adapter_start adapter=%s kind=%s", self.name, type(self).__name__)

    async def stop(self) -> None:
        """Stop the protocol loop and close connections; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()
        log.info("event=adapter_stop adapter=%s %s", self.name, _kv(self.counters.as_dict()))

    @property
    def running(self) -> bool:
        """True while the protocol loop runs."""
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- delivery ------------------------------------------------------------------------------
    async def batches(self) -> AsyncIterator[list[Measurement]]:
        """Yield batches of measurements as they arrive (when no ``on_batch`` callback is set)."""
        while True:
            yield await self._queue.get()

    async def next_batch(self, timeout: float | None = None) -> list[Measurement]:
        """Return the next batch; raise TimeoutError when none arrives within ``timeout`` seconds."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    def drain(self) -> list[Measurement]:
        """Return every measurement queued so far, without waiting."""
        out: list[Measurement] = []
        while not self._queue.empty():
            out.extend(self._queue.get_nowait())
        return out

    def drain_up_to(self, limit: int) -> list[Measurement]:
        """Return whole queued batches, without waiting, until at least ``limit`` measurements or the queue is empty."""
        out: list[Measurement] = []
        while len(out) < limit and not self._queue.empty():
            out.extend(self._queue.get_nowait())
        return out

    async def _publish(self, batch: list[Measurement]) -> None:
        if not batch:
            return
        self.counters.received += len(batch)
        self.counters.invalid += sum(1 for m in batch if m.quality & Quality.IV)
        if self.on_batch is None:
            self._queue.put_nowait(batch)
            return
        result = self.on_batch(batch)
        if result is not None:
            await result

    # -- for subclasses ------------------------------------------------------------------------
    async def _run(self) -> None:
        """Run the protocol loop until cancelled."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Release connections after the loop stopped."""

    async def _guarded_run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # a bug in an adapter must be visible, not a silently dead loop
            log.exception("event=adapter_crash adapter=%s", self.name)
            raise


@dataclass
class InProcessAdapter(TelemetryAdapter):
    """An adapter fed in-process: :meth:`push` hands measurements straight to its consumers."""

    async def _run(self) -> None:
        await asyncio.Event().wait()

    async def push(self, measurements: Iterable[Measurement]) -> None:
        """Deliver ``measurements`` as one batch, as if they had arrived over a protocol."""
        await self._publish(list(measurements))


def _kv(values: Mapping[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())

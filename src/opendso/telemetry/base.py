"""The transport seam: measurements, adapter counters, commands, and the base class every adapter follows.

Every protocol adapter (Modbus TCP, MQTT, IEC 60870-5-104, ...) derives from
:class:`TelemetryAdapter`: it is started and stopped (``async with adapter:``), and it hands
out measurements in batches, either by ``async for batch in adapter.batches()`` or through a
callback given at construction.

Commands go the other way through the same object, one interface for every protocol:
:meth:`TelemetryAdapter.operate_switch` (open or close), :meth:`TelemetryAdapter.send_setpoint`,
or :meth:`TelemetryAdapter.command` with a :class:`~opendso.telemetry.commands.CommandRequest`.
Each returns a :class:`~opendso.telemetry.commands.CommandResult` whose outcome is one of the
four :class:`~opendso.telemetry.commands.CommandOutcome` (refused, no response, confirmed but
not executed, completed); it never raises for what the field or the request does wrong. The
feedback a command waits for is the commanded point's status as the adapter hands it out, so
every protocol's confirmed command is checked the same way (see :mod:`opendso.telemetry.commands`).

:class:`InProcessAdapter` is the in-process implementation for fast unit tests of whatever
consumes measurements (historian, real-time cycle, alarms) or sends commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from opendso.measurement import Measurement
from opendso.telemetry.commands import (
    CommandAttempt,
    CommandKind,
    CommandOutcome,
    CommandRequest,
    CommandResult,
    FeedbackWatch,
)
from opendso.telemetry.quality import Quality

__all__ = [
    "AdapterCounters",
    "BatchCallback",
    "CommandHandler",
    "InProcessAdapter",
    "Measurement",
    "TelemetryAdapter",
    "utc_now",
]

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

    A protocol that takes commands implements :meth:`_command` (send, interpret the
    confirmation, then :meth:`_await_feedback`) and :meth:`_status`; the default refuses every
    command. ``feedback_timeout_s`` is the default time a confirmed command's status may take
    to report the requested value.
    """

    name: str
    on_batch: BatchCallback | None = None
    counters: AdapterCounters = field(default_factory=AdapterCounters)
    feedback_timeout_s: float = 10.0
    _queue: asyncio.Queue[list[Measurement]] = field(default_factory=asyncio.Queue, init=False, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _watches: dict[str, list[FeedbackWatch]] = field(default_factory=dict, init=False, repr=False)

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
        if self._watches:
            for m in batch:
                for watch in self._watches.get(m.point, ()):
                    watch.offer(m.value, m.quality)
        if self.on_batch is None:
            self._queue.put_nowait(batch)
            return
        result = self.on_batch(batch)
        if result is not None:
            await result

    # -- commands ------------------------------------------------------------------------------
    async def command(self, request: CommandRequest) -> CommandResult:
        """Send one command and return its result (one of the four outcomes; see :mod:`~opendso.telemetry.commands`).

        Never raises for the request or the field: a malformed request, an unknown point and an
        exception while sending are refusals. Cancelling the caller cancels the command's wait
        (what was sent stays sent).
        """
        attempt = CommandAttempt(request, self.name)
        problem = request.problem()
        if problem is not None:
            result = attempt.refused(problem)
        else:
            try:
                result = await self._command(request, attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a library or connection failure while sending: refused, and logged
                log.exception("event=command_failed adapter=%s point=%s", self.name, request.point)
                result = attempt.refused(f"exception while sending: {type(exc).__name__}: {exc}")
        log.log(
            logging.INFO if result.completed else logging.WARNING,
            "event=command adapter=%s point=%s command=%r sbo=%s outcome=%s reason=%r",
            self.name,
            request.point,
            request.description,
            result.select_before_operate,
            result.outcome,
            result.reason,
        )
        return result

    async def operate_switch(
        self,
        point: str,
        *,
        closed: bool,
        select_before_operate: bool | None = None,
        feedback_timeout_s: float | None = None,
    ) -> CommandResult:
        """Close (``closed=True``) or open the switch of ``point``; see :meth:`command`."""
        return await self.command(
            CommandRequest(
                point,
                CommandKind.SWITCH,
                1.0 if closed else 0.0,
                select_before_operate=select_before_operate,
                feedback_timeout_s=feedback_timeout_s,
            )
        )

    async def send_setpoint(
        self,
        point: str,
        value: float,
        *,
        select_before_operate: bool | None = None,
        feedback_timeout_s: float | None = None,
        tolerance: float | None = None,
    ) -> CommandResult:
        """Set ``point`` to ``value`` (in the point's unit); see :meth:`command`."""
        return await self.command(
            CommandRequest(
                point,
                CommandKind.SETPOINT,
                float(value),
                select_before_operate=select_before_operate,
                feedback_timeout_s=feedback_timeout_s,
                tolerance=tolerance,
            )
        )

    async def _command(self, request: CommandRequest, attempt: CommandAttempt) -> CommandResult:
        """Send ``request`` over the protocol and return its result; the default takes no commands."""
        return attempt.refused(f"adapter {self.name} ({type(self).__name__}) takes no commands")

    def _status(self, point: str) -> tuple[float, int] | None:
        """Return the (value, quality) last handed out for ``point``, None when none was."""
        return None

    @contextlib.contextmanager
    def _watching(self, attempt: CommandAttempt, tolerance: float = 0.0) -> Iterator[FeedbackWatch]:
        """Watch the status of the attempt's point while the block runs (register before sending).

        The status the adapter holds now is offered first: a command asking for the state the
        point already reports is completed by its confirmation.
        """
        request = attempt.request
        want = request.value
        if request.kind == CommandKind.SWITCH:
            watch = FeedbackWatch(request.point, lambda value: value == want)
        else:
            watch = FeedbackWatch(request.point, lambda value: abs(value - want) <= tolerance)
        attempt.watch = watch
        current = self._status(request.point)
        if current is not None:
            watch.offer(*current)
        watches = self._watches.setdefault(request.point, [])
        watches.append(watch)
        try:
            yield watch
        finally:
            watches.remove(watch)
            if not watches:
                del self._watches[request.point]

    async def _await_feedback(self, attempt: CommandAttempt, confirmation: str) -> CommandResult:
        """After a positive ``confirmation`` (words): completed when the status matches in time, else not executed."""
        watch = attempt.watch
        assert watch is not None, "register the watch (_watching) before sending"
        request = attempt.request
        timeout_s = self.feedback_timeout_s if request.feedback_timeout_s is None else request.feedback_timeout_s
        if await watch.wait(timeout_s):
            return attempt.finish(
                CommandOutcome.COMPLETED, f"{confirmation}; status {request.point} reports {watch.last:g}"
            )
        seen = "reported nothing" if watch.last is None else f"reports {watch.last:g}"
        return attempt.finish(
            CommandOutcome.NOT_EXECUTED,
            f"{confirmation}, but status {request.point} {seen}, not {request.description}, {timeout_s:g} s after",
        )

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


#: Decides an in-process command's outcome (see :class:`InProcessAdapter`).
CommandHandler = Callable[[CommandRequest], Awaitable[CommandOutcome] | CommandOutcome]


@dataclass
class InProcessAdapter(TelemetryAdapter):
    """An adapter fed in-process: :meth:`push` hands measurements straight to its consumers.

    Commands go to ``on_command``, which returns the outcome to report (without one, every
    command is refused); the result's reason says it was decided in-process.
    """

    on_command: CommandHandler | None = None

    async def _run(self) -> None:
        await asyncio.Event().wait()

    async def push(self, measurements: Iterable[Measurement]) -> None:
        """Deliver ``measurements`` as one batch, as if they had arrived over a protocol."""
        await self._publish(list(measurements))

    async def _command(self, request: CommandRequest, attempt: CommandAttempt) -> CommandResult:
        if self.on_command is None:
            return attempt.refused(f"in-process adapter {self.name} has no command handler")
        attempt.mark_sent()
        outcome = self.on_command(request)
        if isinstance(outcome, Awaitable):
            outcome = await outcome
        outcome = CommandOutcome(outcome)
        if outcome in (CommandOutcome.NOT_EXECUTED, CommandOutcome.COMPLETED):
            attempt.mark_confirmed()
        return attempt.finish(outcome, f"decided in-process: {outcome}")


def _kv(values: Mapping[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())

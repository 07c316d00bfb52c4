"""The set-point arbiter: one per DER export-limit point, merging every application's requests.

ANM, FLISR, operators, demand response and flexibility markets each hold at most one request per
point (:class:`~opendso.operations.setpoints.model.SetpointRequest`); a new request from a source
replaces that source's previous one, :meth:`SetpointArbiter.release` withdraws it. The arbiter
alone writes the point, so two applications never fight over one inverter.

**Merge rule.** Export limits are caps: the limit in force is the *minimum* over the active
requests of every source, because a tighter cap is never a risk to the network (whoever asked
for it, every other source's cap is also met). The *owner* is the source whose request binds;
on a tie, the source of higher priority (:class:`SetpointSource` order: FLISR, ANM, operator,
DR, market). With no active limit the DER may export up to its rating, and the rating is what
is written (a heartbeat the DER's watchdog sees like any limit).

**Sending.** Each change of the limit in force goes through the set-point gate
(:class:`~opendso.operations.setpoints.gate.SetpointGate`: ownership, range, stale state, ramp
rate) and then the dispatcher
(:meth:`~opendso.operations.switching.dispatch.SwitchingDispatcher.dispatch_setpoint`, path
:attr:`~opendso.operations.switching.dispatch.CommandPath.ANM`), which logs and audits it. A
request whose own limit the gate refuses (ownership, range), or whose new limit in force the
gate refuses (stale state), changes nothing: the previous requests stay as they were and nothing
is sent. A rise faster than the gate's ramp rate is sent as far as the ramp allows now, and
:meth:`SetpointArbiter.refresh` continues it. When the field does not take a value (refused, no
response, not executed) the outcome is ``failed``; the requests stay, and :meth:`refresh` sends
again.

**Watchdog.** A flexible DER falls back to its fail-safe export limit when no limit (or
heartbeat) is written within its watchdog time. :meth:`SetpointArbiter.refresh` writes the limit
in force again to every point last written more than ``refresh_s`` ago (choose it well below
the DERs' watchdog time), and to every point whose last write failed or whose rise is still
ramping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from opendso.errors import InputError
from opendso.operations.setpoints.gate import SetpointGate
from opendso.operations.setpoints.model import (
    SetpointDecision,
    SetpointOutcome,
    SetpointRequest,
    SetpointRule,
    SetpointSource,
)
from opendso.operations.switching.dispatch import CommandPath, SwitchingDispatcher
from opendso.telemetry.commands import CommandResult

__all__ = ["SetpointArbiter", "merge_requests"]

log = logging.getLogger(__name__)


def merge_requests(requests: Mapping[SetpointSource, SetpointRequest]) -> tuple[float | None, SetpointSource | None]:
    """The limit in force and its owner: the minimum over the requests that set a limit (ties: higher priority).

    (None, None) when no request sets a limit.
    """
    best: tuple[float, int, SetpointSource] | None = None
    for source, request in requests.items():
        if request.limit_w is None:
            continue
        key = (request.limit_w, source.priority, source)
        if best is None or key[:2] < best[:2]:
            best = key
    return (None, None) if best is None else (best[0], best[2])


@dataclass
class _Sent:
    value_w: float  # the value last written and completed
    at: datetime  # when (the arbiter's clock)
    ok: bool  # the last attempt completed


class SetpointArbiter:
    """Merges every source's export-limit requests per point and writes the result (see the module docstring).

    ``dispatcher`` sends (:meth:`~opendso.operations.switching.dispatch.SwitchingDispatcher.dispatch_setpoint`),
    ``gate`` decides and names the flexible DER points the arbiter owns. ``refresh_s``: how long
    a written value stands before :meth:`refresh` writes it again (keep it well under the DERs'
    watchdog). ``clock``: the time the gate and the ramp use (the field simulator's clock in
    tests; default UTC now). ``tolerance_w``: how far the DER's read-back may be from the value
    written and still count (None: the adapter's default). ``actor``: who the writes are logged as.
    """

    def __init__(
        self,
        dispatcher: SwitchingDispatcher,
        gate: SetpointGate,
        *,
        refresh_s: float = 20.0,
        clock: Callable[[], datetime] | None = None,
        tolerance_w: float | None = None,
        actor: str = "setpoint-arbiter",
    ) -> None:
        if not (math.isfinite(refresh_s) and refresh_s > 0):
            raise InputError(f"set-point arbiter: refresh_s must be > 0, got {refresh_s!r}")
        self.dispatcher = dispatcher
        self.gate = gate
        self.refresh_s = float(refresh_s)
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.tolerance_w = tolerance_w
        self.actor = actor
        self._requests: dict[str, dict[SetpointSource, SetpointRequest]] = {}
        self._sent: dict[str, _Sent] = {}
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    # -- reading -------------------------------------------------------------------------------------
    def effective(self, point: str) -> tuple[float | None, SetpointSource | None]:
        """The export limit in force on ``point`` (None: no limit) and the source that owns it."""
        return merge_requests(self._requests.get(point, {}))

    def requests(self, point: str) -> dict[SetpointSource, SetpointRequest]:
        """The active request of every source on ``point`` (a copy)."""
        return dict(self._requests.get(point, {}))

    def sent(self, point: str) -> tuple[float, datetime] | None:
        """The value last written to ``point`` and completed, and when; None before the first."""
        s = self._sent.get(point)
        return None if s is None else (s.value_w, s.at)

    # -- requests ------------------------------------------------------------------------------------
    async def submit(self, request: SetpointRequest) -> SetpointOutcome:
        """Take ``request`` (replacing its source's previous one on the point) and write the new limit in force."""
        async with self._lock():
            now = self.clock()
            if request.limit_w is not None:
                own = self.gate.check_range(request.point, request.limit_w)
                if not own.allowed:
                    return self._refused(request.point, own, request.source, now)
            elif self.gate.der(request.point) is None:
                return self._refused(request.point, self.gate.check_range(request.point, 0.0), request.source, now)
            before = self.requests(request.point)
            after = {**before, request.source: request}
            return await self._apply(request.point, before, after, now, request.source, request.reason)

    async def release(self, source: SetpointSource, point: str, *, reason: str) -> SetpointOutcome:
        """Withdraw ``source``'s request on ``point``; the next binding request (or no limit) takes over."""
        source = SetpointSource(source)
        async with self._lock():
            now = self.clock()
            if self.gate.der(point) is None:
                return self._refused(point, self.gate.check_range(point, 0.0), source, now)
            before = self.requests(point)
            after = {s: r for s, r in before.items() if s is not source}
            return await self._apply(point, before, after, now, source, reason)

    async def refresh(self, now: datetime | None = None) -> list[SetpointOutcome]:
        """Write again every point due (last written ``refresh_s`` ago or more, failed, or still ramping).

        Returns one outcome per point written (points not due are left out). Call it at least
        every ``refresh_s`` (e.g. from the real-time cycle), so no DER's watchdog expires.
        """
        outcomes: list[SetpointOutcome] = []
        async with self._lock():
            now = now or self.clock()
            for point in list(self._sent):
                sent = self._sent[point]
                target = self._target(point, self.requests(point))
                due = (
                    not sent.ok
                    or (now - sent.at).total_seconds() >= self.refresh_s
                    or abs(sent.value_w - target) > 1e-9 * max(1.0, target)
                )
                if not due:
                    continue
                requests = self.requests(point)
                outcomes.append(await self._write(point, requests, now, None, "refresh", force=True))
        return outcomes

    # -- internals -----------------------------------------------------------------------------------
    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def _target(self, point: str, requests: Mapping[SetpointSource, SetpointRequest]) -> float:
        limit, _ = merge_requests(requests)
        der = self.gate.der(point)
        assert der is not None
        return der.rating_w if limit is None else limit

    async def _apply(
        self,
        point: str,
        before: dict[SetpointSource, SetpointRequest],
        after: dict[SetpointSource, SetpointRequest],
        now: datetime,
        source: SetpointSource,
        reason: str,
    ) -> SetpointOutcome:
        outcome = await self._write(point, after, now, source, reason, force=False)
        if outcome.status == "refused":
            self._requests[point] = before  # a refused change changes nothing
            limit, owner = merge_requests(before)
            outcome = replace(outcome, effective_w=limit, owner=owner)
        return outcome

    async def _write(
        self,
        point: str,
        requests: dict[SetpointSource, SetpointRequest],
        now: datetime,
        source: SetpointSource | None,
        reason: str,
        *,
        force: bool,
    ) -> SetpointOutcome:
        limit, owner = merge_requests(requests)
        target = self._target(point, requests)
        sent = self._sent.get(point)
        last = None if sent is None else (sent.value_w, sent.at)
        self._requests[point] = requests
        if not force and sent is not None and sent.ok and abs(sent.value_w - target) <= 1e-9 * max(1.0, target):
            why = "the limit in force did not change"
            return SetpointOutcome("unchanged", point, limit, owner, None, why, None, sent.value_w, source, now)
        value = self.gate.ramp_ceiling(point, target, now=now, last=last)
        decision = self.gate.check(point, value, now=now, last=last)
        if not decision.allowed:
            return self._refused(point, decision, source, now)
        details: dict[str, Any] = {
            "source": source.value if source is not None else None,
            "effective_w": limit,
            "owner": owner.value if owner is not None else None,
            "target_w": target,
            "requests": {s.value: r.as_dict() for s, r in requests.items()},
            "decision": decision.as_dict(),
        }
        # a heartbeat (the value in force written again for the watchdog) is not an event of its own
        heartbeat = sent is not None and sent.ok and abs(sent.value_w - value) <= 1e-9 * max(1.0, value)
        result = await self.dispatcher.dispatch_setpoint(
            point,
            value,
            path=CommandPath.ANM,
            actor=requests[source].actor if source is not None and source in requests else self.actor,
            reason=reason,
            details=details,
            tolerance=self.tolerance_w,
            record=not heartbeat,
        )
        return self._finish(point, value, result, limit, owner, source, now)

    def _finish(
        self,
        point: str,
        value: float,
        result: CommandResult,
        limit: float | None,
        owner: SetpointSource | None,
        source: SetpointSource | None,
        now: datetime,
    ) -> SetpointOutcome:
        if result.completed:
            self._sent[point] = _Sent(value, now, True)
            status, why = "sent", result.reason
        else:
            previous = self._sent.get(point)
            self._sent[point] = _Sent(previous.value_w if previous else value, previous.at if previous else now, False)
            status, why = "failed", f"{result.outcome}: {result.reason}"
        log.log(
            logging.INFO if status == "sent" else logging.WARNING,
            "event=setpoint_%s point=%s value_w=%g effective_w=%s owner=%s source=%s",
            status,
            point,
            value,
            limit,
            owner,
            source,
        )
        return SetpointOutcome(status, point, limit, owner, None, why, result, value, source, now)

    def _refused(
        self,
        point: str,
        decision: SetpointDecision,
        source: SetpointSource | None,
        now: datetime,
    ) -> SetpointOutcome:
        limit, owner = self.effective(point) if decision.rule is not SetpointRule.OWNERSHIP else (None, None)
        log.warning(
            "event=setpoint_refused point=%s rule=%s source=%s reason=%r",
            point,
            decision.rule,
            source,
            decision.reason,
        )
        rule = decision.rule.value if decision.rule is not None else None
        return SetpointOutcome("refused", point, limit, owner, rule, decision.reason, None, None, source, now)

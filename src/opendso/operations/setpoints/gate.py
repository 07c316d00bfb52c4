"""The set-point gate: one check of one export-limit value on one DER point, rules in order.

:meth:`SetpointGate.check` returns a :class:`~opendso.operations.setpoints.model.SetpointDecision`
and stops at the first rule that refuses, so a refusal names exactly one rule:

1. ownership: the point must be registered as a flexible DER's export-limit point (the arbiter
   owns it: it alone writes it); any other point is refused;
2. range: the value must be a finite number in 0..the DER's rating (``FlexibleDer.rating_w``,
   from the grid's ``sym_gen`` or the registry's ``export_kw``); NaN, infinite and negative
   limits are refused;
3. stale state: the DER's telemetry (``FlexibleDer.telemetry``, from the latest values) and the
   real-time cycle's estimate (when an estimate reader is given) must exist, be of good
   quality and be at most ``max_age_s`` old: a limit is not decided on a state nobody sees;
4. ramp rate: from the last value sent at time t0, a rise may not exceed ``ramp_up_w_per_s``
   x (now - t0); a fall may not exceed ``ramp_down_w_per_s`` x (now - t0) when that is
   configured. By default a fall (a tighter limit) steps at once: lowering export is never a
   risk to the network, and a constraint must be relieved now. The first value sent to a point
   has no reference and passes.

Nothing here sends, stores or logs: the arbiter
(:class:`~opendso.operations.setpoints.arbiter.SetpointArbiter`) puts the gate in front of the
dispatcher. :meth:`SetpointGate.ramp_ceiling` tells the arbiter how far a rise may go now, so a
release ramps up in steps the gate allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from opendso.measurement import Measurement
from opendso.operations.setpoints.model import FlexibleDer, SetpointDecision, SetpointGateConfig, SetpointRule
from opendso.quality import Quality

__all__ = ["EstimateReader", "LatestReader", "SetpointGate"]

#: Point name -> its latest measurement (None when none is held): the DER's telemetry.
LatestReader = Callable[[str], Measurement | None]
#: The time and quality of the real-time cycle's latest estimate (None when there is none yet).
EstimateReader = Callable[[], tuple[datetime, int] | None]

_ORDER = (SetpointRule.OWNERSHIP, SetpointRule.RANGE, SetpointRule.STALE_STATE, SetpointRule.RAMP_RATE)


class SetpointGate:
    """The gate every export limit passes before it is sent (see the module docstring).

    ``ders``: the flexible DER points the arbiter owns; ``config``: ramp rates and the oldest
    state allowed; ``latest``: the latest value of a telemetry point (None: the stale-state rule
    checks nothing of the DER's telemetry, for studies); ``estimate``: the time and quality of
    the cycle's latest estimate (None: not checked).
    """

    def __init__(
        self,
        ders: Iterable[FlexibleDer],
        config: SetpointGateConfig | None = None,
        *,
        latest: LatestReader | None = None,
        estimate: EstimateReader | None = None,
    ) -> None:
        self.config = config or SetpointGateConfig()
        self.latest = latest
        self.estimate = estimate
        self._ders: dict[str, FlexibleDer] = {}
        for der in ders:
            if der.point in self._ders:
                raise ValueError(f"set-point gate: point {der.point!r} registered twice")
            self._ders[der.point] = der

    @property
    def ders(self) -> Mapping[str, FlexibleDer]:
        """The registered flexible DER points by point name."""
        return self._ders

    def der(self, point: str) -> FlexibleDer | None:
        """The flexible DER of ``point``; None when the point is not registered."""
        return self._ders.get(point)

    def check(
        self, point: str, value_w: float, *, now: datetime, last: tuple[float, datetime] | None
    ) -> SetpointDecision:
        """Decide whether ``value_w`` may be written to ``point`` at ``now`` (``last``: last value sent, when)."""
        passed: list[SetpointRule] = []
        for rule in _ORDER:
            reason = self._refusal(rule, point, value_w, now, last)
            if reason is not None:
                return SetpointDecision(point, value_w, False, rule, reason, tuple(passed))
            passed.append(rule)
        return SetpointDecision(point, value_w, True, None, "", tuple(passed))

    def check_range(self, point: str, value_w: float) -> SetpointDecision:
        """The ownership and range rules alone (a request's own limit, before it is merged)."""
        passed: list[SetpointRule] = []
        for rule in _ORDER[:2]:
            reason = self._refusal(rule, point, value_w, None, None)
            if reason is not None:
                return SetpointDecision(point, value_w, False, rule, reason, tuple(passed))
            passed.append(rule)
        return SetpointDecision(point, value_w, True, None, "", tuple(passed))

    def ramp_ceiling(self, point: str, target_w: float, *, now: datetime, last: tuple[float, datetime] | None) -> float:
        """The value nearest ``target_w`` the ramp rule allows at ``now`` (``target_w`` itself when it does)."""
        if last is None:
            return target_w
        value, at = last
        dt = max((now - at).total_seconds(), 0.0)
        up, down = self.config.ramp_up_w_per_s, self.config.ramp_down_w_per_s
        if target_w > value and up is not None:
            return min(target_w, value + up * dt)
        if target_w < value and down is not None:
            return max(target_w, value - down * dt)
        return target_w

    # -- the rules ---------------------------------------------------------------------------------
    def _refusal(
        self, rule: SetpointRule, point: str, value_w: float, now: datetime | None, last: tuple[float, datetime] | None
    ) -> str | None:
        der = self._ders.get(point)
        if rule is SetpointRule.OWNERSHIP:
            if der is None:
                return f"point {point!r} is not a flexible DER's export-limit point the arbiter owns"
            return None
        assert der is not None
        if rule is SetpointRule.RANGE:
            if isinstance(value_w, bool) or not isinstance(value_w, int | float) or not math.isfinite(value_w):
                return f"export limit of {point!r} must be a finite number of W, got {value_w!r}"
            if not 0.0 <= value_w <= der.rating_w:
                return f"export limit {value_w:g} W of {point!r} is outside 0..{der.rating_w:g} W (the DER's rating)"
            return None
        assert now is not None
        if rule is SetpointRule.STALE_STATE:
            return self._stale(der, now)
        return self._ramp(der, value_w, now, last)

    def _stale(self, der: FlexibleDer, now: datetime) -> str | None:
        max_age = self.config.max_age_s
        if self.latest is not None:
            for name in der.telemetry:
                m = self.latest(name)
                if m is None:
                    return f"no telemetry of {name!r} yet: the state of DER {der.name or der.point!r} is unknown"
                if m.quality != Quality.GOOD or not math.isfinite(m.value):
                    return f"telemetry of {name!r} is not good (quality {Quality(int(m.quality))!s})"
                age = (now - m.time).total_seconds()
                if age > max_age:
                    return f"telemetry of {name!r} is {age:.0f} s old (more than {max_age:g} s)"
        if self.estimate is not None:
            held = self.estimate()
            if held is None:
                return "no state estimate yet"
            at, quality = held
            if quality != Quality.GOOD:
                return f"the state estimate is not good (quality {Quality(int(quality))!s})"
            age = (now - at).total_seconds()
            if age > max_age:
                return f"the state estimate is {age:.0f} s old (more than {max_age:g} s)"
        return None

    def _ramp(self, der: FlexibleDer, value_w: float, now: datetime, last: tuple[float, datetime] | None) -> str | None:
        if last is None:
            return None
        allowed = self.ramp_ceiling(der.point, value_w, now=now, last=last)
        if abs(allowed - value_w) <= 1e-9 * max(1.0, abs(value_w)):
            return None
        before, at = last
        dt = max((now - at).total_seconds(), 0.0)
        rate = self.config.ramp_up_w_per_s if value_w > before else self.config.ramp_down_w_per_s
        return (
            f"export limit of {der.point!r} from {before:g} W to {value_w:g} W in {dt:g} s is faster than "
            f"{rate:g} W/s (at most {allowed:g} W now)"
        )

"""The set-point arbiter and its gate: merge rule, owner, release, refresh, and every gate rule.

The arbiter writes to the field simulator's real DER model (the twin's export limit, watchdog and
power flow) through an in-process adapter; the protocols are driven end to end in
``test_setpoints_field.py``. Numbers are checked against the twin's power flow output, never
against what the arbiter says it sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from opendso.errors import CommandError, InputError
from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.setpoints import (
    FlexibleDer,
    LatestReader,
    SetpointArbiter,
    SetpointGate,
    SetpointGateConfig,
    SetpointRequest,
    SetpointRule,
    SetpointSource,
    merge_requests,
)
from opendso.operations.switching import SafetyGate, SwitchingDispatcher, SwitchingState
from opendso.quality import Quality
from opendso.store import Historian
from opendso.telemetry import CommandOutcome, CommandRequest, InProcessAdapter
from opendso.telemetry.binding import STATE_QUANTITIES, Target, bind_points
from opendso.telemetry.points import point_map_for_grid
from opendso.telemetry.simulator import DerSettings, FieldSimulator, der_points

ANM, FLISR, OPERATOR, DR, MARKET = (
    SetpointSource.ANM,
    SetpointSource.FLISR,
    SetpointSource.OPERATOR,
    SetpointSource.DR,
    SetpointSource.MARKET,
)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


def sunny_step(grid: Grid, generator: str, days: int = 200) -> int:
    """The profile step (within the first ``days``) where ``generator`` has its most power."""
    profiles = grid.profiles
    assert profiles is not None
    gens = grid.component("sym_gen")
    row = int(np.flatnonzero(grid.names_of("sym_gen") == generator)[0])
    for assignment in profiles.assignments:
        if assignment.component == "sym_gen" and assignment.attribute == "p_specified":
            at = int(np.flatnonzero(assignment.ids == gens["id"][row])[0])
            p = assignment.evaluate(profiles.values[: days * 96])[:, at]
            return int(np.argmax(p))
    raise AssertionError("no generator profile")


class Twin:
    """The field simulator's twin (not served) behind an in-process adapter, and an arbiter writing to it."""

    def __init__(
        self,
        grid: Grid,
        tmp_path: Path | None = None,
        *,
        config: SetpointGateConfig | None = None,
        latest: LatestReader | None = None,
        telemetry: tuple[str, ...] = (),
    ) -> None:
        self.gen = str(grid.names_of("sym_gen")[0])
        point_map = der_points(point_map_for_grid(grid, port=0), [self.gen])
        self.point = f"{self.gen}/p_limit"
        self.sim = FieldSimulator(grid, point_map, noise=0, servers=[], start_step=sunny_step(grid, self.gen))
        self.row = int(np.flatnonzero(grid.names_of("sym_gen") == self.gen)[0])
        self.rating = float(grid.component("sym_gen")["p_specified"][self.row])
        self.sent: list[tuple[str, float]] = []
        self.field_outcome = CommandOutcome.COMPLETED
        self.adapter = InProcessAdapter(name="twin", on_command=self.command)
        self.historian = Historian.open(f"sqlite:///{tmp_path / 'db.sqlite'}") if tmp_path else None
        self.dispatcher = SwitchingDispatcher(
            SafetyGate(),
            lambda: grid,
            SwitchingState,
            lambda switch: None,
            setpoint_route=lambda point: self.adapter if point == self.point else None,
            events=self.historian.events if self.historian else None,
        )
        self.now = T0
        der = FlexibleDer(self.point, self.rating, telemetry=telemetry, name=self.gen)
        self.gate = SetpointGate([der], config, latest=latest)
        self.arbiter = SetpointArbiter(self.dispatcher, self.gate, refresh_s=20.0, clock=lambda: self.now)

    def command(self, request: CommandRequest) -> CommandOutcome:
        self.sent.append((request.point, request.value))
        if self.field_outcome is not CommandOutcome.COMPLETED:
            return self.field_outcome
        try:
            self.sim.apply_command(request.point, request.value)
        except CommandError:
            return CommandOutcome.REFUSED
        return CommandOutcome.COMPLETED

    def output_w(self) -> float:
        """The generator's active power in the twin's power flow."""
        return float(self.sim.result.output["sym_gen"]["p"][self.row])

    def request(self, source: SetpointSource, limit_w: float | None) -> SetpointRequest:
        return SetpointRequest(source, self.point, limit_w, f"test {source.value}")


# -- the merge rule ---------------------------------------------------------------------------------------
def test_merge_is_the_minimum_and_ties_go_to_the_higher_priority() -> None:
    def req(source: SetpointSource, limit: float | None) -> SetpointRequest:
        return SetpointRequest(source, "g/p_limit", limit, "r")

    assert merge_requests({}) == (None, None)
    assert merge_requests({ANM: req(ANM, None)}) == (None, None)
    assert merge_requests({ANM: req(ANM, 5.0), MARKET: req(MARKET, 3.0)}) == (3.0, MARKET)
    assert merge_requests({MARKET: req(MARKET, 3.0), DR: req(DR, 3.0), OPERATOR: req(OPERATOR, 3.0)}) == (
        3.0,
        OPERATOR,
    )
    assert merge_requests({FLISR: req(FLISR, 0.0), ANM: req(ANM, 0.0)}) == (0.0, FLISR)
    assert [s.priority for s in SetpointSource] == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_arbiter_merges_sources_and_release_restores_the_next(grid: Grid, tmp_path: Path) -> None:
    t = Twin(grid, tmp_path)
    try:
        available = t.sim.generator_power(t.gen)[0]
        assert available > 0.3 * t.rating  # a sunny step: the limits below bind
        assert t.output_w() == pytest.approx(available)
        a = await t.arbiter.submit(t.request(ANM, 0.6 * available))
        assert (a.status, a.effective_w, a.owner) == ("sent", 0.6 * available, ANM)
        assert t.output_w() == pytest.approx(0.6 * available)
        m = await t.arbiter.submit(t.request(MARKET, 0.3 * available))
        assert (m.status, m.effective_w, m.owner) == ("sent", 0.3 * available, MARKET)
        assert t.output_w() == pytest.approx(0.3 * available)
        # a tie: the higher priority owns it, nothing to send
        o = await t.arbiter.submit(t.request(OPERATOR, 0.3 * available))
        assert (o.status, o.owner) == ("unchanged", OPERATOR)
        assert set(t.arbiter.requests(t.point)) == {ANM, MARKET, OPERATOR}
        # a looser request from one source never loosens the limit in force
        d = await t.arbiter.submit(t.request(DR, 0.9 * available))
        assert (d.status, d.effective_w, d.owner) == ("unchanged", 0.3 * available, OPERATOR)
        assert (await t.arbiter.release(MARKET, t.point, reason="market closed")).status == "unchanged"
        assert t.arbiter.effective(t.point) == (0.3 * available, OPERATOR)
        r = await t.arbiter.release(OPERATOR, t.point, reason="done")
        assert (r.status, r.effective_w, r.owner) == ("sent", 0.6 * available, ANM)
        assert t.output_w() == pytest.approx(0.6 * available)
        # a source's new request replaces its old one
        again = await t.arbiter.submit(t.request(ANM, 0.5 * available))
        assert (again.effective_w, t.arbiter.requests(t.point)[ANM].limit_w) == (0.5 * available, 0.5 * available)
        await t.arbiter.release(DR, t.point, reason="done")
        free = await t.arbiter.release(ANM, t.point, reason="constraint gone")
        assert (free.status, free.effective_w, free.owner, free.sent_w) == ("sent", None, None, t.rating)
        assert t.output_w() == pytest.approx(available)
        assert t.sim.der_state(t.gen).limit_w == pytest.approx(t.rating)
        assert t.arbiter.requests(t.point) == {}
        assert t.historian is not None
        events = t.historian.events.find(kind_prefix="setpoint.")
        assert [e.kind for e in events] == ["setpoint.completed"] * len(events)
        assert len(events) == 5  # one per change of the limit in force, none for the unchanged ones
        assert events[0].payload["path"] == "anm"
        assert events[0].payload["owner"] == "anm"
        assert events[0].element == t.point
    finally:
        if t.historian is not None:
            t.historian.close()


@pytest.mark.asyncio
async def test_refresh_writes_before_the_watchdog_and_retries_what_failed(grid: Grid) -> None:
    t = Twin(grid)
    assert await t.arbiter.refresh() == []  # nothing written yet: nothing to keep alive
    await t.arbiter.submit(t.request(ANM, 1000.0))
    assert len(t.sent) == 1
    t.now = T0 + timedelta(seconds=10)
    assert await t.arbiter.refresh() == []  # not due
    t.now = T0 + timedelta(seconds=20)
    [beat] = await t.arbiter.refresh()
    assert (beat.status, beat.sent_w, beat.effective_w) == ("sent", 1000.0, 1000.0)
    assert t.sent[-1] == (t.point, 1000.0)
    # the field stops taking commands: the outcome says so, the request stays, refresh tries again
    t.field_outcome = CommandOutcome.NO_RESPONSE
    failed = await t.arbiter.submit(t.request(ANM, 800.0))
    assert failed.status == "failed"
    assert "no_response" in failed.reason
    assert t.arbiter.effective(t.point) == (800.0, ANM)
    t.field_outcome = CommandOutcome.COMPLETED
    [retry] = await t.arbiter.refresh()  # due at once: the last write failed
    assert (retry.status, retry.sent_w) == ("sent", 800.0)
    assert t.sim.der_state(t.gen).limit_w == 800.0


@pytest.mark.asyncio
async def test_heartbeats_stay_out_of_the_event_log_unless_they_fail(grid: Grid, tmp_path: Path) -> None:
    """A refresh of the value in force feeds the watchdog; only changes and failed writes are events."""
    t = Twin(grid, tmp_path)
    assert t.historian is not None
    try:
        await t.arbiter.submit(t.request(ANM, 1000.0))
        for k in range(1, 4):  # three heartbeats, each sent to the field
            t.now = T0 + timedelta(seconds=20 * k)
            [beat] = await t.arbiter.refresh()
            assert (beat.status, beat.sent_w) == ("sent", 1000.0)
        assert len(t.sent) == 4
        assert [e.kind for e in t.historian.events.find(kind_prefix="setpoint.")] == ["setpoint.completed"]
        t.field_outcome = CommandOutcome.NO_RESPONSE  # a heartbeat the DER does not answer is recorded
        t.now = T0 + timedelta(seconds=80)
        [lost] = await t.arbiter.refresh()
        assert lost.status == "failed"
        kinds = [e.kind for e in t.historian.events.find(kind_prefix="setpoint.")]
        assert kinds == ["setpoint.completed", "setpoint.no_response"]
    finally:
        t.historian.close()


@pytest.mark.asyncio
async def test_a_rise_ramps_and_refresh_continues_it(grid: Grid) -> None:
    t = Twin(grid, config=SetpointGateConfig(ramp_up_w_per_s=100.0))
    down = await t.arbiter.submit(t.request(ANM, 0.0))
    assert down.sent_w == 0.0
    t.now = T0 + timedelta(seconds=10)
    up = await t.arbiter.release(ANM, t.point, reason="peak passed")
    assert (up.status, up.effective_w) == ("sent", None)
    assert up.sent_w == pytest.approx(1000.0)
    assert t.sim.der_state(t.gen).limit_w == pytest.approx(1000.0)
    t.now = T0 + timedelta(seconds=12)
    [more] = await t.arbiter.refresh()  # still ramping: due before refresh_s
    assert more.sent_w == pytest.approx(1200.0)
    # a fall is never held back: a tighter limit steps at once
    t.now = T0 + timedelta(seconds=13)
    cut = await t.arbiter.submit(t.request(FLISR, 0.0))
    assert (cut.status, cut.sent_w, cut.owner) == ("sent", 0.0, FLISR)


# -- hostile requests ---------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_hostile_requests_are_refused_and_change_nothing(grid: Grid) -> None:
    t = Twin(grid)
    await t.arbiter.submit(t.request(ANM, 2000.0))
    before = (t.arbiter.requests(t.point), t.arbiter.effective(t.point), len(t.sent))
    for bad in (math.nan, math.inf, -math.inf, -1.0, t.rating * 1.01):
        out = await t.arbiter.submit(t.request(MARKET, bad))
        assert (out.status, out.rule) == ("refused", SetpointRule.RANGE.value), bad
        assert (out.effective_w, out.owner) == (2000.0, ANM)
    unknown = await t.arbiter.submit(SetpointRequest(ANM, "MV2.101 Measurement 3/p", 0.0, "not a DER limit"))
    assert (unknown.status, unknown.rule) == ("refused", "ownership")
    released = await t.arbiter.release(ANM, "nowhere/p_limit", reason="x")
    assert (released.status, released.rule) == ("refused", "ownership")
    assert (t.arbiter.requests(t.point), t.arbiter.effective(t.point), len(t.sent)) == before
    with pytest.raises(InputError, match="unknown source 'hacker'"):
        SetpointRequest("hacker", t.point, 0.0, "x")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="limit_w"):
        SetpointRequest(ANM, t.point, "100", "x")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="reason"):
        SetpointRequest(ANM, t.point, 1.0, "bad\x00text")
    with pytest.raises(InputError, match="rating_w"):
        FlexibleDer("p", math.nan)
    # the twin itself refuses what no arbiter would send (a raw write from outside)
    for bad in (math.nan, -5.0, t.rating * 2, math.inf):
        with pytest.raises(CommandError):
            t.sim.apply_command(t.point, bad)
    with pytest.raises(CommandError, match="takes no commands"):
        t.sim.apply_command(f"{t.gen}/p_available", 1.0)
    assert t.sim.der_state(t.gen).limit_w == 2000.0


@pytest.mark.asyncio
async def test_stale_state_refuses_and_keeps_the_requests(grid: Grid) -> None:
    held: dict[str, Measurement] = {}
    avail = f"{grid.names_of('sym_gen')[0]}/p_available"
    t = Twin(grid, latest=held.get, config=SetpointGateConfig(max_age_s=10.0), telemetry=(avail,))
    first = await t.arbiter.submit(t.request(ANM, 1000.0))
    assert (first.status, first.rule) == ("refused", "stale_state")
    assert "no telemetry" in first.reason
    assert t.arbiter.requests(t.point) == {}
    assert t.sent == []
    held[avail] = Measurement(avail, T0 - timedelta(seconds=11), 5000.0)
    assert (await t.arbiter.submit(t.request(ANM, 1000.0))).rule == "stale_state"
    held[avail] = Measurement(avail, T0, 5000.0, Quality.IV)
    assert (await t.arbiter.submit(t.request(ANM, 1000.0))).rule == "stale_state"
    held[avail] = Measurement(avail, T0 - timedelta(seconds=5), 5000.0)
    assert (await t.arbiter.submit(t.request(ANM, 1000.0))).status == "sent"


# -- the gate, rule by rule ------------------------------------------------------------------------------------
def gate_of(config: SetpointGateConfig | None = None, **readers: object) -> SetpointGate:
    ders = [FlexibleDer("g/p_limit", 10_000.0, telemetry=("g/p_available",), name="g")]
    return SetpointGate(ders, config, **readers)  # type: ignore[arg-type]


def test_gate_ownership_and_range() -> None:
    gate = gate_of()
    no = gate.check("other/p_limit", 0.0, now=T0, last=None)
    assert (no.allowed, no.rule, no.passed) == (False, SetpointRule.OWNERSHIP, ())
    for bad in (-0.001, 10_000.001, math.nan, math.inf, -math.inf):
        d = gate.check("g/p_limit", bad, now=T0, last=None)
        assert (d.allowed, d.rule, d.passed) == (False, SetpointRule.RANGE, (SetpointRule.OWNERSHIP,)), bad
    for good in (0.0, 5_000.0, 10_000.0):
        d = gate.check("g/p_limit", good, now=T0, last=None)
        assert d.allowed, good
        assert d.rule is None
        assert len(d.passed) == 4


def test_gate_stale_state_of_the_der_and_of_the_estimate() -> None:
    latest: dict[str, Measurement] = {}
    estimate: list[tuple[datetime, int] | None] = [None]
    gate = gate_of(SetpointGateConfig(max_age_s=30.0), latest=latest.get, estimate=lambda: estimate[0])

    def rule() -> SetpointRule | None:
        return gate.check("g/p_limit", 100.0, now=T0, last=None).rule

    assert rule() is SetpointRule.STALE_STATE  # no telemetry
    latest["g/p_available"] = Measurement("g/p_available", T0 - timedelta(seconds=31), 1.0)
    assert rule() is SetpointRule.STALE_STATE  # too old
    latest["g/p_available"] = Measurement("g/p_available", T0, math.nan)
    assert rule() is SetpointRule.STALE_STATE  # no value
    latest["g/p_available"] = Measurement("g/p_available", T0, 1.0, Quality.NT)
    assert rule() is SetpointRule.STALE_STATE  # not topical
    latest["g/p_available"] = Measurement("g/p_available", T0 - timedelta(seconds=29), 1.0)
    assert rule() is SetpointRule.STALE_STATE  # telemetry fine, no estimate yet
    estimate[0] = (T0 - timedelta(seconds=40), 0)
    assert "estimate is 40 s old" in gate.check("g/p_limit", 100.0, now=T0, last=None).reason
    estimate[0] = (T0, int(Quality.IV))
    assert rule() is SetpointRule.STALE_STATE
    estimate[0] = (T0 - timedelta(seconds=2), 0)
    assert rule() is None


def test_gate_ramp_rate_up_and_down() -> None:
    gate = gate_of(SetpointGateConfig(ramp_up_w_per_s=100.0))
    last = (1_000.0, T0)
    later = T0 + timedelta(seconds=5)
    assert gate.check("g/p_limit", 1_500.0, now=later, last=last).allowed
    refused = gate.check("g/p_limit", 1_501.0, now=later, last=last)
    assert (refused.rule, refused.allowed) == (SetpointRule.RAMP_RATE, False)
    assert "at most 1500 W" in refused.reason
    assert gate.check("g/p_limit", 0.0, now=later, last=last).allowed  # a fall steps at once by default
    assert gate.check("g/p_limit", 9_000.0, now=later, last=None).allowed  # no reference: the first value passes
    assert gate.ramp_ceiling("g/p_limit", 9_000.0, now=later, last=last) == 1_500.0
    both = gate_of(SetpointGateConfig(ramp_up_w_per_s=100.0, ramp_down_w_per_s=50.0))
    assert both.check("g/p_limit", 750.0, now=later, last=last).allowed
    assert both.check("g/p_limit", 749.0, now=later, last=last).rule is SetpointRule.RAMP_RATE
    with pytest.raises(InputError):
        SetpointGateConfig(ramp_up_w_per_s=0.0)
    with pytest.raises(InputError):
        SetpointGateConfig(max_age_s=math.nan)


# -- the twin's DER model ---------------------------------------------------------------------------------------
def test_twin_watchdog_applies_the_fail_safe_limit_until_a_fresh_write(grid: Grid) -> None:
    gen = str(grid.names_of("sym_gen")[0])
    point_map = der_points(point_map_for_grid(grid, port=0), [gen])
    sim = FieldSimulator(
        grid,
        point_map,
        noise=0,
        servers=[],
        start_step=sunny_step(grid, gen),
        der={gen: DerSettings(watchdog_s=30.0, fail_safe_w=500.0)},
    )
    row = int(np.flatnonzero(grid.names_of("sym_gen") == gen)[0])
    available = sim.generator_power(gen)[0]
    assert available > 2_000.0
    sim.advance(100.0)  # never written: no watchdog armed, no limit
    assert not sim.der_state(gen).fail_safe
    assert sim.result.output["sym_gen"]["p"][row] == pytest.approx(available)
    sim.apply_command(f"{gen}/p_limit", 2_000.0)
    sim.advance(29.0)
    assert sim.result.output["sym_gen"]["p"][row] == pytest.approx(2_000.0)
    sim.apply_command(f"{gen}/p_limit", 2_000.0)  # a heartbeat restarts the watchdog
    sim.advance(29.0)
    assert not sim.der_state(gen).fail_safe
    sim.advance(2.0)  # 31 s since the last write
    state = sim.der_state(gen)
    assert state.fail_safe
    assert state.in_force_w == 500.0
    assert sim.result.output["sym_gen"]["p"][row] == pytest.approx(500.0)
    assert sim.exact_values()[f"{gen}/p_limit"] == 500.0  # the read-back reports the limit in force
    assert sim.exact_values()[f"{gen}/p_available"] == pytest.approx(available)
    # the rating itself, as float32 on the wire rounds it up, is a limit the DER takes
    sim.apply_command(f"{gen}/p_limit", float(np.nextafter(np.float32(sim.der_state(gen).rating_w), np.float32(1e30))))
    sim.apply_command(f"{gen}/p_limit", 1_500.0)  # a fresh set-point ends the fail-safe
    assert not sim.der_state(gen).fail_safe
    assert sim.result.output["sym_gen"]["p"][row] == pytest.approx(1_500.0)
    # a limit tighter than the fail-safe one is kept when the link is lost: never more export
    sim.apply_command(f"{gen}/p_limit", 100.0)
    sim.advance(31.0)
    assert sim.der_state(gen).fail_safe
    assert sim.result.output["sym_gen"]["p"][row] == pytest.approx(100.0)


def test_der_points_bind_to_generators_only(grid: Grid) -> None:
    gen = str(grid.names_of("sym_gen")[0])
    load = str(grid.names_of("sym_load")[0])
    binding = bind_points(grid, {"a": (gen, "p_limit"), "b": (gen, "p_available"), "c": (load, "p_limit")})
    assert binding.target.tolist() == [Target.DER, Target.DER, Target.NONE]
    assert binding.component.tolist()[:2] == ["sym_gen", "sym_gen"]
    [finding] = binding.findings
    assert (finding.point, finding.field) == ("c", "quantity")
    # the real-time cycle's state quantities do not include them: the estimate never reads a limit as a flow
    assert not {"p_limit", "p_available"} & STATE_QUANTITIES

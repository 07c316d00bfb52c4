"""The dispatcher: gate first, then the adapter; every decision and outcome logged and audited; one at a time.

On the demo grid with an in-process adapter that acts like the field (a command it completes
moves the switch in the grid the dispatcher reads). The real protocols are driven in
``test_command_paths.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import feeder_breaker
from test_switching_store import Field

from opendso.errors import ConflictError, UnknownSwitchError
from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.switching import (
    CommandPath,
    GateConfig,
    GateRule,
    Override,
    SafetyGate,
    SwitchAction,
    SwitchingDispatcher,
    SwitchingRegister,
    SwitchingRequest,
    SwitchingState,
    SwitchingStep,
    TagKind,
    execute_steps,
    measured_nodes,
    qualities_from_latest,
    route_by_point_map,
)
from opendso.quality import Quality
from opendso.service.audit import AuditTrail
from opendso.store import Historian
from opendso.store.switching import SwitchingStore
from opendso.telemetry import CommandOutcome, CommandRequest, InProcessAdapter
from opendso.telemetry.points import point_map_for_grid

OPEN, CLOSE = SwitchAction.OPEN, SwitchAction.CLOSE


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture
def historian(tmp_path: Path) -> Iterator[Historian]:
    h = Historian.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield h
    h.close()


class FakeField:
    """An in-process field: completes commands (or answers ``outcome``) and moves the switch when it completes."""

    def __init__(self, field: Field, outcome: CommandOutcome = CommandOutcome.COMPLETED, delay_s: float = 0.0) -> None:
        self.field = field
        self.outcome = outcome
        self.delay_s = delay_s
        self.seen: list[CommandRequest] = []
        self.running = 0
        self.most_at_once = 0
        self.adapter = InProcessAdapter(name="field", on_command=self.handle)

    async def handle(self, request: CommandRequest) -> CommandOutcome:
        self.seen.append(request)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.delay_s)
            if self.outcome == CommandOutcome.COMPLETED:
                self.field.set(request.point.removesuffix("/switch"), request.value == 1.0)
            return self.outcome
        finally:
            self.running -= 1


class Rig:
    def __init__(self, historian: Historian, grid: Grid, **options: object) -> None:
        self.historian = historian
        self.field = Field(grid)
        self.fake = FakeField(self.field)
        self.audit = AuditTrail(historian.engine)
        self.register = SwitchingRegister(
            SwitchingStore(historian.engine), self.field, events=historian.events, audit=self.audit.append
        )
        self.qualities: dict[str, Quality] | None = None
        self.dispatcher = SwitchingDispatcher(
            SafetyGate(options.pop("config", GateConfig())),  # type: ignore[arg-type]
            self.field,
            self.register.state,
            lambda switch: (self.fake.adapter, f"{switch}/switch"),
            events=historian.events,
            audit=self.audit.append,
            qualities=lambda: self.qualities,
            **options,  # type: ignore[arg-type]
        )

    def events(self) -> list[str]:
        return [e.kind for e in self.historian.events.find(kind_prefix="switching.")]


def two_switches(grid: Grid) -> tuple[str, str]:
    """A feeder breaker and another closed switch of another part of the grid (opening either is allowed)."""
    row = feeder_breaker(grid)
    breaker = str(grid.switch_names[row])
    gate = SafetyGate()
    for other in grid.switch_names[::-1]:
        name = str(other)
        r = int(np.flatnonzero(grid.switch_names == name)[0])
        if name == breaker or not grid.switches["closed"][r]:
            continue
        if gate.check(grid, SwitchingRequest(name, OPEN, "t"), state=SwitchingState()).allowed:
            return breaker, name
    raise AssertionError("no second switch")


@pytest.mark.asyncio
async def test_an_allowed_command_reaches_the_adapter_and_is_logged(historian: Historian, grid: Grid) -> None:
    rig = Rig(historian, grid)
    breaker, _ = two_switches(grid)
    request = SwitchingRequest(breaker, OPEN, "op", frozenset({"operator"}))
    assert rig.dispatcher.preview(request).allowed
    outcome = await rig.dispatcher.execute(request, path=CommandPath.SCRIPT)
    assert outcome.status == "completed"
    assert outcome.completed
    assert [r.point for r in rig.fake.seen] == [f"{breaker}/switch"]
    assert rig.fake.seen[0].value == 0.0
    assert outcome.telemetry["checked_by"] == "adapter_feedback"
    assert rig.events() == ["switching.completed"]
    event = historian.events.find(kind="switching.completed")[0]
    assert event.seq == outcome.event_seq
    assert event.element == breaker
    assert event.actor == "op"
    assert event.payload["decision"]["allowed"] is True
    assert event.payload["decision"]["passed"] == [r.value for r in GateRule]
    assert event.payload["result"]["outcome"] == "completed"
    assert event.payload["path"] == "script"
    record = rig.audit.read()[-1]
    assert (record.action, record.result, record.element) == ("switching.completed", "completed", breaker)
    # the switch moved: the same request again is a conflict, nothing sent or logged
    with pytest.raises(ConflictError, match="already open"):
        await rig.dispatcher.execute(request, path=CommandPath.SCRIPT)
    assert len(rig.fake.seen) == 1
    with pytest.raises(UnknownSwitchError):
        await rig.dispatcher.execute(SwitchingRequest("no such switch", OPEN, "op"), path=CommandPath.API)
    assert rig.events() == ["switching.completed"]


@pytest.mark.asyncio
async def test_a_refusal_names_its_rule_and_sends_nothing(historian: Historian, grid: Grid) -> None:
    rig = Rig(historian, grid)
    breaker, other = two_switches(grid)
    rig.register.place_tag(breaker, TagKind.DO_NOT_OPERATE, "men at work", actor="op")
    tag = rig.register.place_tag(other, TagKind.CAUTION, "spring charge weak", actor="op")
    refused = await rig.dispatcher.execute(SwitchingRequest(breaker, OPEN, "op"), path=CommandPath.API)
    assert refused.status == "refused"
    assert refused.result is None
    assert refused.decision.rule is GateRule.TAGS
    assert "do-not-operate" in refused.decision.reason
    caution = await rig.dispatcher.execute(SwitchingRequest(other, OPEN, "op"), path=CommandPath.API)
    assert caution.decision.rule is GateRule.TAGS
    assert caution.status == "refused"
    assert rig.fake.seen == []
    # the override with a reason lifts the caution tag, and the reason is audited
    overridden = SwitchingRequest(other, OPEN, "op", overrides=(Override(tag.id, "checked on site by J. Doe"),))
    done = await rig.dispatcher.execute(overridden, path=CommandPath.API)
    assert done.status == "completed"
    assert done.decision.overrides == (Override(tag.id, "checked on site by J. Doe"),)
    assert rig.events() == ["switching.tag_placed"] * 2 + ["switching.refused"] * 2 + ["switching.completed"]
    refusal = historian.events.find(kind="switching.refused")[0]
    assert refusal.payload["decision"]["rule"] == "tags"
    audited = rig.audit.read()
    assert audited[-1].reason == "checked on site by J. Doe"
    assert audited[-2].result == "refused"
    assert "caution tag" in (audited[-2].reason or "")


@pytest.mark.asyncio
async def test_a_switch_without_a_route_is_refused(historian: Historian, grid: Grid) -> None:
    rig = Rig(historian, grid)
    breaker, _ = two_switches(grid)
    rig.dispatcher.route = lambda switch: None
    outcome = await rig.dispatcher.execute(SwitchingRequest(breaker, OPEN, "op"), path=CommandPath.UI)
    assert outcome.status == "refused"
    assert outcome.decision.reason == f"no telemetry point commands switch {breaker}"
    assert rig.fake.seen == []


@pytest.mark.asyncio
async def test_untrusted_state_is_refused_and_flisr_falls_back_to_advisory(historian: Historian, grid: Grid) -> None:
    rig = Rig(historian, grid)
    breaker, _ = two_switches(grid)
    rig.qualities = {str(s): Quality.GOOD for s in grid.switch_names}
    rig.qualities[breaker] = Quality.SUBSTITUTED  # entered by hand
    request = SwitchingRequest(breaker, OPEN, "flisr")
    refused = await rig.dispatcher.execute(request, path=CommandPath.FLISR)
    assert refused.status == "refused"
    assert refused.decision.rule is GateRule.TRUSTWORTHY_STATE
    assert f"switch {breaker}" in refused.decision.reason
    assert "SUBSTITUTED" in refused.decision.reason
    advisory = await rig.dispatcher.execute(request, path=CommandPath.FLISR, advisory_fallback=True)
    assert advisory.status == "advisory"
    assert advisory.result is None
    assert rig.fake.seen == []
    # a refusal by another rule stays a refusal, advisory fallback or not
    rig.qualities[breaker] = Quality.GOOD
    rig.register.place_tag(breaker, TagKind.DO_NOT_OPERATE, "x", actor="op")
    tagged = await rig.dispatcher.execute(request, path=CommandPath.FLISR, advisory_fallback=True)
    assert tagged.status == "refused"
    assert tagged.decision.rule is GateRule.TAGS
    assert rig.events() == ["switching.refused", "switching.advisory", "switching.tag_placed", "switching.refused"]


@pytest.mark.asyncio
async def test_field_outcomes_are_checked_against_the_latest_values(historian: Historian, grid: Grid) -> None:
    held: dict[str, tuple[float, int]] = {}
    rig = Rig(historian, grid, status=held.get)
    breaker, other = two_switches(grid)
    held[breaker] = (0.0, int(Quality.GOOD))
    done = await rig.dispatcher.execute(SwitchingRequest(breaker, OPEN, "op"), path=CommandPath.SCRIPT)
    assert done.telemetry == {
        "checked_by": "latest_values",
        "value": 0.0,
        "quality": 0,
        "agrees": True,
        "adapter_feedback": None,
    }
    rig.fake.outcome = CommandOutcome.NOT_EXECUTED
    held[other] = (1.0, int(Quality.GOOD))
    stuck = await rig.dispatcher.execute(SwitchingRequest(other, OPEN, "op"), path=CommandPath.SCRIPT)
    assert stuck.status == "not_executed"
    assert stuck.telemetry["agrees"] is False
    assert rig.events() == ["switching.completed", "switching.not_executed"]
    for outcome in (CommandOutcome.NO_RESPONSE, CommandOutcome.REFUSED):
        rig.fake.outcome = outcome
        result = await rig.dispatcher.execute(SwitchingRequest(other, OPEN, "op"), path=CommandPath.SCRIPT)
        assert result.status == str(outcome)
        assert result.decision.allowed
    assert rig.events()[-2:] == ["switching.no_response", "switching.refused"]


@pytest.mark.asyncio
async def test_commands_are_sent_one_at_a_time(historian: Historian, grid: Grid) -> None:
    rig = Rig(historian, grid)
    rig.fake.delay_s = 0.2
    breaker, other = two_switches(grid)
    results = await asyncio.gather(
        rig.dispatcher.execute(SwitchingRequest(breaker, OPEN, "a"), path=CommandPath.API),
        rig.dispatcher.execute(SwitchingRequest(other, OPEN, "b"), path=CommandPath.UI),
    )
    assert [r.status for r in results] == ["completed", "completed"]
    assert rig.fake.most_at_once == 1
    first, second = sorted(results, key=lambda r: r.requested_at)
    assert second.requested_at >= first.finished_at  # the second was decided after the first ended


@pytest.mark.asyncio
async def test_steps_run_in_order_and_stop_at_the_first_that_does_not_complete(
    historian: Historian, grid: Grid
) -> None:
    rig = Rig(historian, grid)
    breaker, other = two_switches(grid)
    rig.register.place_tag(other, TagKind.DO_NOT_OPERATE, "x", actor="op")
    steps = [SwitchingStep(breaker, OPEN), SwitchingStep(other, OPEN), SwitchingStep(breaker, CLOSE)]
    outcomes = await execute_steps(rig.dispatcher, steps, actor="eng", path=CommandPath.PLAN, settle_s=1.0)
    assert [o.status for o in outcomes] == ["completed", "refused"]
    assert outcomes[1].decision.rule is GateRule.TAGS
    assert [r.point for r in rig.fake.seen] == [f"{breaker}/switch"]


def test_qualities_and_routes_from_the_point_map(grid: Grid) -> None:
    point_map = point_map_for_grid(grid, port=1)
    switch_points = [p for p in point_map.points if p.quantity == "switch"]
    nodes = measured_nodes(grid, point_map)
    node_names = set(grid.names_of("node").tolist())
    assert switch_points
    assert nodes
    assert set(nodes.values()) <= node_names
    # every voltage sensor of the grid measures the node it names as its measured object
    sensors = grid.component("sym_voltage_sensor")
    assert len(nodes) == sensors.size
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    latest = {p.name: Measurement(p.name, now, 1.0, 0) for p in point_map.points}
    latest[switch_points[0].name] = Measurement(switch_points[0].name, now, 1.0, int(Quality.INVALID))
    old = next(iter(nodes))
    latest[old] = Measurement(old, now - timedelta(minutes=10), 230.0, 0)
    del latest[switch_points[1].name]
    q = qualities_from_latest(latest, point_map, nodes=nodes, now=now, stale_after=timedelta(minutes=1))
    assert q[switch_points[0].element] == Quality.INVALID
    assert switch_points[1].element not in q  # no value yet: the gate calls it unknown
    assert q[nodes[old]] & Quality.STALE
    assert q[switch_points[2].element] == Quality.GOOD
    assert set(q) <= node_names | set(grid.switch_names.tolist())
    adapter = InProcessAdapter(name="only")
    route = route_by_point_map([adapter], point_map)
    assert route(switch_points[0].element) == (adapter, switch_points[0].name)
    assert route("not a switch") is None

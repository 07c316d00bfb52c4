"""Active network management against the field simulator, over real Modbus TCP on loopback.

The test grid (built here with pandapower): a 20/0.4 kV transformer feeds a weak cable
("Cable 1", NAYY 4x50, 142 A) to three nodes in a row, each with a 50 kW PV plant and a 3 kW
load. The PV follows a profile of ten quarter-hours (0.5, 0.7, 1.0, 1.0, 1.0, 0.7, 0.4, 0.3, 0.3, 0.3 of
its peak): at the peak Cable 1 carries about 135 % of its rating (reverse flow), before and after
it less than 95 %. The three PV are flexible connections of the DER registry: PV 1 registered
without a request (the most senior), PV 2 connected on a request of 2026-01-05, PV 3 on one a day
later (the newest).

The control room side is the real path: the Modbus poller reads the twin's points, the real-time
cycle estimates the state, :class:`AnmController` decides, the set-point arbiter and its gate
send through the switching dispatcher to the poller, which writes the twin's ``p_limit``
registers and waits for the read-back. The simulated clock is paused and moved by hand, one
cycle every :data:`CYCLE_S` simulated seconds, so every run is deterministic; each cycle waits
for two fresh polls. What is asserted is read from the twin (its own power flow), not from what
the control room believes; the sensitivities are checked against pandapower.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandapower as pp
import pandas as pd
import pytest
from leaks import assert_no_leaks

from opendso.calc.placement import place_measurements
from opendso.der import (
    AccessPrinciple,
    Agreement,
    AgreementKind,
    AssetKind,
    Control,
    ControlProtocol,
    DerAsset,
    DerRegistry,
    RequestStatus,
)
from opendso.der.anm import (
    AnmController,
    AnmDer,
    AnmSettings,
    Escalation,
    allocate_curtailment,
    anm_ders,
    annual_energy_mwh,
    curtailment_groups,
    flexible_generators,
)
from opendso.der.anm_sensitivity import export_sensitivities
from opendso.errors import InputError
from opendso.grid.io.pandapower_reader import from_pandapower
from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.cycle import CycleResult, CycleSettings, RealTimeCycle
from opendso.operations.setpoints import FlexibleDer, SetpointArbiter, SetpointGate, SetpointGateConfig
from opendso.operations.switching import SafetyGate, SwitchingDispatcher, SwitchingState, route_by_point_map
from opendso.operations.switching.dispatch import route_setpoints_by_point_map
from opendso.store import Historian
from opendso.store.der import DerStore
from opendso.telemetry.modbus import ModbusPoller
from opendso.telemetry.points import PointMap, point_map_for_grid
from opendso.telemetry.simulator import FieldSimulator
from opendso.telemetry.simulator.der import DerSettings, der_points

PV = ("PV 1", "PV 2", "PV 3")
PV_KW = 50.0
PROFILE = (0.5, 0.7, 1.0, 1.0, 1.0, 0.7, 0.4, 0.3, 0.3, 0.3)
STEP_S = 900.0
#: Simulated seconds between two cycles: three cycles per quarter-hour.
CYCLE_S = 300.0
#: The constraint must be back under 100 % within this many cycles of the peak's first cycle.
RELIEVED_WITHIN = 2
WATCHDOG_S = 3 * CYCLE_S  # the DER's watchdog; the arbiter refreshes every cycle
#: Modbus reads of one poll of the test map (holding and input registers), with margin.
READS_PER_POLL = 3
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CABLE = "line:Cable 1"


def lv_net() -> pp.pandapowerNet:
    net = pp.create_empty_network(sn_mva=1.0)
    mv = pp.create_bus(net, 20.0, name="MV")
    b0 = pp.create_bus(net, 0.4, name="LV busbar")
    nodes = [pp.create_bus(net, 0.4, name=f"Node {k}") for k in (1, 2, 3)]
    pp.create_ext_grid(net, mv, vm_pu=1.0, name="Grid", s_sc_max_mva=1e4, rx_max=0.1)
    pp.create_transformer(net, mv, b0, std_type="0.63 MVA 20/0.4 kV", name="Transformer")
    pp.create_line(net, b0, nodes[0], 0.1, std_type="NAYY 4x50 SE", name="Cable 1")
    pp.create_line(net, nodes[0], nodes[1], 0.1, std_type="NAYY 4x150 SE", name="Cable 2")
    cable3 = pp.create_line(net, nodes[1], nodes[2], 0.1, std_type="NAYY 4x150 SE", name="Cable 3")
    pp.create_switch(net, nodes[1], cable3, et="l", type="LBS", name="PV 3 switch")
    for k, bus in enumerate(nodes, start=1):
        pp.create_load(net, bus, p_mw=0.003, q_mvar=0.001, name=f"Load {k}", profile="H0")
        pp.create_sgen(net, bus, p_mw=PV_KW / 1e3, name=f"PV {k}", type="PV", profile="PV1")
    times = pd.date_range("2016-06-01 10:00", periods=len(PROFILE), freq="15min").strftime("%d.%m.%Y %H:%M")
    net["profiles"] = {
        "renewables": pd.DataFrame({"time": times, "PV1": list(PROFILE)}),
        "load": pd.DataFrame({"time": times, "H0_pload": [1.0] * len(PROFILE), "H0_qload": [1.0] * len(PROFILE)}),
    }
    return net


@pytest.fixture(scope="module")
def grid() -> Grid:
    return anm_grid()


def anm_grid() -> Grid:
    """The test grid with a voltage meter at every node and power meters at both ends of every branch."""
    g = from_pandapower(lv_net(), name="anm-lv")
    sensors = place_measurements(g)
    names = {
        c: np.array([f"{c.split('_')[1]} meter {int(i)}" for i in a["id"]], dtype=object) for c, a in sensors.items()
    }
    return replace(g, sensors=sensors, names={**g.names, **names})


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    with assert_no_leaks():
        yield


def _asset(asset_id: str, node: str, principle: AccessPrinciple, *, fail_safe_kw: float = 10.0) -> DerAsset:
    return DerAsset(
        asset_id,
        f"Solar {asset_id}",
        AssetKind.PV,
        node,
        f"Owner of {asset_id}",
        export_kw=PV_KW,
        agreement=Agreement(AgreementKind.FLEXIBLE, principle, 5.0, fail_safe_kw),
    )


def make_registry(
    grid: Grid, historian: Historian, principle: AccessPrinciple, *, fail_safe_kw: float = 10.0
) -> DerRegistry:
    registry = DerRegistry(DerStore(historian.engine), grid, clock=lambda: T0)
    for k in (1, 2, 3):
        registry.add_asset(_asset(f"A{k}", f"Node {k}", principle, fail_safe_kw=fail_safe_kw), actor="t")
    for k, day in ((2, 0), (3, 1)):  # A1 was there before the queue: the most senior
        registry.submit(f"R{k}", f"A{k}", received_at=T0 + timedelta(days=day), actor="t")
        version = 1
        for status in (RequestStatus.STUDIED, RequestStatus.OFFERED, RequestStatus.ACCEPTED, RequestStatus.CONNECTED):
            _, version = registry.move(f"R{k}", version, status, actor="t")
    return registry


# -- pure parts ----------------------------------------------------------------------------------------------
def _peak_grid(grid: Grid) -> Grid:
    gens = grid.input["sym_gen"].copy()
    gens["p_specified"] = PV_KW * 1e3
    return replace(grid, input={**grid.input, "sym_gen": gens})


def test_sensitivities_agree_with_pandapower(grid: Grid) -> None:
    sens = export_sensitivities(_peak_grid(grid), list(PV), delta_w=1000.0)
    net = lv_net()
    net.sgen["p_mw"] = PV_KW / 1e3
    pp.runpp(net, tolerance_mva=1e-10, numba=False)
    base_loading, base_u = net.res_line.loading_percent.to_numpy() / 100, net.res_bus.vm_pu.to_numpy()
    line_names = list(net.line.name)
    for k in range(3):
        net.sgen.loc[k, "p_mw"] = PV_KW / 1e3 - 1e-3
        pp.runpp(net, tolerance_mva=1e-10, numba=False)
        net.sgen.loc[k, "p_mw"] = PV_KW / 1e3
        d_loading = (base_loading - net.res_line.loading_percent.to_numpy() / 100) / 1000.0
        d_u = (base_u - net.res_bus.vm_pu.to_numpy()) / 1000.0
        for j, name in enumerate(line_names):
            ours = sens.loading[k, sens.branches.index(f"line:{name}")]
            assert ours == pytest.approx(d_loading[j], rel=2e-3, abs=1e-9), (k, name)
        node_names = [str(n) for n in grid.names_of("node")]
        for j, name in enumerate(net.bus.name):
            assert sens.u_pu[k, node_names.index(name)] == pytest.approx(d_u[j], rel=5e-3, abs=1e-10), (k, name)
    # every PV is behind Cable 1; the nearest relieves it most (less loss on the way)
    relief = sens.loading[:, sens.branches.index(CABLE)]
    assert (relief > 0).all()
    assert relief[0] > relief[1] > relief[2]
    with pytest.raises(InputError, match="no generator 'PV 9'"):
        export_sensitivities(grid, ["PV 9"])


def _ders(principle: AccessPrinciple) -> list[AnmDer]:
    return [AnmDer(_asset(f"A{k}", f"Node {k}", principle), f"PV {k}/p_limit", f"PV {k}", k - 1) for k in (1, 2, 3)]


def test_principles_order_the_curtailment() -> None:
    sens = {"A1": 3.0, "A2": 1.0, "A3": 2.0}
    lifo = curtailment_groups(_ders(AccessPrinciple.LIFO), AccessPrinciple.LIFO, sens)
    assert [[d.asset.id for d in g] for g in lifo] == [["A3"], ["A2"], ["A1"]]
    pro = curtailment_groups(_ders(AccessPrinciple.PRO_RATA), AccessPrinciple.PRO_RATA, sens)
    assert [[d.asset.id for d in g] for g in pro] == [["A1", "A2", "A3"]]
    best = curtailment_groups(_ders(AccessPrinciple.TECHNICAL_BEST), AccessPrinciple.TECHNICAL_BEST, sens)
    assert [[d.asset.id for d in g] for g in best] == [["A1"], ["A3"], ["A2"]]
    assert curtailment_groups(_ders(AccessPrinciple.LIFO), AccessPrinciple.PRO_RATA, sens) == []
    # allocation: the first group gives all it has before the next is touched; pro-rata by one share
    out = np.array([40e3, 30e3, 20e3])
    relief = np.array([1e-5, 1e-5, 1e-5])
    curtail, left = allocate_curtailment(0.25, [[2], [1], [0]], out, relief)
    assert curtail == pytest.approx([0.0, 5e3, 20e3])
    assert left == 0.0
    curtail, left = allocate_curtailment(0.45, [[0, 1, 2]], out, relief)
    assert curtail / out == pytest.approx([0.5, 0.5, 0.5])
    curtail, left = allocate_curtailment(2.0, [[0], [1]], out, relief)
    assert curtail == pytest.approx([40e3, 30e3, 0.0])
    assert left == pytest.approx(2.0 - 0.7)


def test_annual_energy_for_the_cap_follows_the_generators_profile(grid: Grid) -> None:
    expected = float(np.mean(PROFILE)) * PV_KW * 8760.0 / 1e3  # MWh: the mean relative output over a year
    assert annual_energy_mwh(grid, "PV 1", PV_KW) == pytest.approx(expected)
    assert annual_energy_mwh(grid, "PV 9", PV_KW) is None
    assert annual_energy_mwh(replace(grid, profiles=None), "PV 1", PV_KW) is None


def test_der_that_anm_cannot_reach_are_left_out(grid: Grid, tmp_path: Path) -> None:
    """No generator at its node, or a control address naming no export-limit point: not under ANM."""
    point_map = der_points(point_map_for_grid(grid, port=0), PV)
    historian = Historian.open(f"sqlite:///{tmp_path / 'der.sqlite'}")
    try:
        registry = make_registry(grid, historian, AccessPrinciple.LIFO)
        registry.add_asset(_asset("B1", "LV busbar", AccessPrinciple.LIFO), actor="t")  # no generator there
        stray = _asset("B2", "Node 1", AccessPrinciple.LIFO)
        control = Control(ControlProtocol.MODBUS, "Battery 7/p_limit")
        registry.add_asset(replace(stray, control=control), actor="t")  # a point the map does not have
        firm = DerAsset("F1", "Firm PV", AssetKind.PV, "Node 2", "Owner", export_kw=10.0)  # firm: never curtailed
        registry.add_asset(firm, actor="t")
        ders = anm_ders(registry, point_map, grid)
        generators = {g: a.id for g, a in flexible_generators(registry, grid).items()}
    finally:
        historian.close()
    assert [(d.asset.id, d.point, d.seniority) for d in ders] == [
        ("A1", "PV 1/p_limit", 0),
        ("A2", "PV 2/p_limit", 1),
        ("A3", "PV 3/p_limit", 2),
    ]
    assert all(d.available_point == f"{d.generator}/p_available" for d in ders)
    assert generators == {"PV 1": "A1", "PV 2": "A2", "PV 3": "A3"}  # what the runtime gives DER points


@pytest.mark.parametrize(
    "bad",
    [
        {"release_loading": 0.96},
        {"target_loading": 1.01},
        {"u_release_pu": 1.095},
        {"release_cycles": 0},
        {"escalate_cycles": 0},
        {"release_step": 0.0},
        {"max_state_age_s": math.nan},
        {"element_triggers": {CABLE: 1.5}},
        {"element_triggers": {CABLE: math.inf}},
    ],
)
def test_settings_refuse_what_cannot_work(bad: dict[str, object]) -> None:
    with pytest.raises(InputError, match="ANM settings"):
        AnmSettings(**bad)  # type: ignore[arg-type]


# -- against the field simulator --------------------------------------------------------------------------
@dataclass
class Field:
    grid: Grid
    sim: FieldSimulator
    poller: ModbusPoller
    cycle: RealTimeCycle
    arbiter: SetpointArbiter
    anm: AnmController
    ders: list[AnmDer]
    latest: dict[str, Measurement]
    historian: Historian
    truth_mwh: dict[str, float]
    limits: dict[str, list[float | None]]

    def now(self) -> datetime:
        return self.sim.simulated_clock()

    def loading(self, element: str = CABLE) -> float:
        """The twin's own power flow: the field's truth."""
        result = self.sim.result
        names = [f"line:{n}" for n in self.grid.names_of("line")]
        return float(result.output["line"]["loading"][names.index(element)])

    async def poll(self) -> None:
        """Wait for two whole polls after the twin published (the poller reports changes only)."""
        await self.sim.publish_once()
        reads = len(self.poller.round_trips_s)
        async with asyncio.timeout(10.0):
            while len(self.poller.round_trips_s) < reads + 2 * READS_PER_POLL:
                await asyncio.sleep(0.01)
        for m in self.poller.drain():
            self.latest[m.point] = m

    async def run_cycle(self, *, at: datetime | None = None) -> CycleResult:
        """Advance the clock one cycle, read the field, estimate, and let ANM act."""
        before = {g: self.sim.generator_power(g) for g in PV}
        self.sim.advance(CYCLE_S)
        for d in self.ders:  # the field's own account: what the twin held over the interval
            available, output = before[d.generator]
            self.truth_mwh[d.asset.id] += max(0.0, available - output) * CYCLE_S / 3.6e9
        await self.poll()
        result = self.cycle.run(dict(self.latest), now=at or self.now())
        await self.anm.step(result)
        for d in self.ders:
            self.limits[d.asset.id].append(self.anm.limit(d.point))
        return result


@asynccontextmanager
async def field(
    grid: Grid,
    tmp_path: Path,
    principle: AccessPrinciple,
    *,
    settings: AnmSettings | None = None,
    fail_safe_kw: float = 10.0,
    deaf: tuple[str, ...] = (),
) -> AsyncIterator[Field]:
    """The twin served over Modbus, the poller, the cycle, the arbiter and ANM; the clock paused at step 0."""
    point_map: PointMap = der_points(point_map_for_grid(grid, port=0, poll_period_s=0.05), PV)
    events = Historian.open(f"sqlite:///{tmp_path / 'control-room.sqlite'}")
    try:
        async with _field(grid, point_map, events, principle, settings, fail_safe_kw, deaf) as f:
            yield f
    finally:
        events.close()


@asynccontextmanager
async def _field(
    grid: Grid,
    point_map: PointMap,
    events: Historian,
    principle: AccessPrinciple,
    settings: AnmSettings | None,
    fail_safe_kw: float,
    deaf: tuple[str, ...],
) -> AsyncIterator[Field]:
    registry = make_registry(grid, events, principle, fail_safe_kw=fail_safe_kw)
    der_settings = {g: DerSettings(watchdog_s=WATCHDOG_S, fail_safe_w=fail_safe_kw * 1e3) for g in PV}
    sim = FieldSimulator(
        grid,
        point_map,
        noise=0,
        speed=1.0,
        publish_period_s=0.2,
        server_options={"field": {"port": 0}},
        der=der_settings,
    )
    if deaf:  # these DER confirm and report a limit but their output never follows it
        rows = np.array([sim.der.row[g] for g in deaf])
        follow = sim.der.apply

        def ignore(available: np.ndarray) -> np.ndarray:
            out = follow(available)
            out[rows] = available[rows]
            return out

        sim.der.apply = ignore  # type: ignore[method-assign]
    async with sim:
        sim.pause()
        port = sim.servers[0].port  # type: ignore[attr-defined]
        live_map = replace(point_map, sources={"field": replace(point_map.sources["field"], port=port)})
        poller = ModbusPoller(name="field", point_map=live_map, source="field", timeout_s=2.0)
        async with poller:
            ders = anm_ders(registry, live_map, grid, trip_switches={"A3": "PV 3 switch"})
            latest: dict[str, Measurement] = {}

            def switched_grid() -> Grid:
                closed = np.array([sim.switch_closed(str(n)) for n in grid.switch_names], dtype=np.int8)
                return grid.with_switch_states(closed)

            dispatcher = SwitchingDispatcher(
                SafetyGate(),
                switched_grid,
                SwitchingState,
                route_by_point_map([poller], live_map),
                events=events.events,
                feedback_timeout_s=5.0,
                setpoint_route=route_setpoints_by_point_map([poller], live_map),
                clock=sim.simulated_clock,
            )
            gate = SetpointGate(
                [FlexibleDer(d.point, d.rating_w, (d.point,), d.asset.id) for d in ders],
                SetpointGateConfig(max_age_s=3600.0),
                latest=latest.get,
            )
            arbiter = SetpointArbiter(dispatcher, gate, refresh_s=CYCLE_S, clock=sim.simulated_clock)
            anm = AnmController(
                arbiter,
                ders,
                settings=settings or AnmSettings(max_gap_s=2 * CYCLE_S),
                latest=lambda: latest,
                events=events.events,
                clock=sim.simulated_clock,
            )
            cycle = RealTimeCycle(grid, live_map, settings=CycleSettings(period_s=CYCLE_S))
            f = Field(
                grid,
                sim,
                poller,
                cycle,
                arbiter,
                anm,
                ders,
                latest,
                events,
                {d.asset.id: 0.0 for d in ders},
                {d.asset.id: [] for d in ders},
            )
            await f.poll()
            yield f


def monotone_down_then_up(values: list[float | None], rating: float) -> bool:
    """True when a limit only falls, then only rises (no oscillation); None counts as the rating."""
    seq = [rating if v is None else v for v in values]
    k = int(np.argmin(seq)) if seq else 0
    return all(a >= b for a, b in pairwise(seq[: k + 1])) and all(a <= b for a, b in pairwise(seq[k:]))


@pytest.mark.asyncio
@pytest.mark.parametrize("principle", list(AccessPrinciple))
async def test_a_pv_peak_is_relieved_in_the_order_of_the_principle_and_released_after_it(
    grid: Grid, tmp_path: Path, principle: AccessPrinciple
) -> None:
    async with field(grid, tmp_path, principle) as f:
        assert [d.asset.id for d in f.ders] == ["A1", "A2", "A3"]  # most senior first
        assert [d.generator for d in f.ders] == list(PV)
        peak_cycle: int | None = None
        over: list[float] = []
        curtailed_at_peak: dict[str, float] = {}
        n_cycles = int(len(PROFILE) * STEP_S / CYCLE_S) - 1
        for k in range(n_cycles):
            await f.run_cycle()
            over.append(f.loading())
            if peak_cycle is None and f.anm.constraints():
                peak_cycle = k
            if f.sim.step in (2, 3, 4):
                for g, d in zip(PV, f.ders, strict=True):
                    available, output = f.sim.generator_power(g)
                    curtailed_at_peak[d.asset.id] = max(curtailed_at_peak.get(d.asset.id, 0.0), available - output)
        assert peak_cycle is not None, "the peak was never seen"
        # relieved within RELIEVED_WITHIN cycles, and held under 100 % for the rest of the peak
        assert max(over[peak_cycle + RELIEVED_WITHIN - 1 :]) < 1.0, over
        # released when the peak passed: no ANM limit left, every DER back at its available power
        assert not f.anm.constraints()
        for g, d in zip(PV, f.ders, strict=True):
            assert f.anm.limit(d.point) is None
            assert f.arbiter.effective(d.point) == (None, None)
            available, output = f.sim.generator_power(g)
            assert output == pytest.approx(available)
        # who gave up export, by principle
        cut = np.array([curtailed_at_peak[i] for i in ("A1", "A2", "A3")])
        if principle is AccessPrinciple.LIFO:
            assert cut[2] > 10e3, cut
            assert cut[:2] == pytest.approx([0.0, 0.0], abs=1.0), cut
        elif principle is AccessPrinciple.PRO_RATA:
            assert (cut > 3e3).all(), cut
            assert cut.max() - cut.min() < 0.05 * cut.mean(), cut  # equal outputs: equal shares
        else:  # technical best: the most sensitive first (pandapower's ranking: PV 1, nearest)
            assert cut[0] > 10e3, cut
            assert cut[1:] == pytest.approx([0.0, 0.0], abs=1.0), cut
        # no oscillation: every limit fell, then rose, and only a few set-points were sent
        for d in f.ders:
            assert monotone_down_then_up(f.limits[d.asset.id], d.rating_w), f.limits[d.asset.id]
        assert f.anm.stats.submits <= 12, f.anm.stats
        # curtailed energy accounted per DER, as the twin itself held it
        for d in f.ders:
            account = f.anm.ledger.account(d.asset.id)
            assert account.curtailed_mwh == pytest.approx(f.truth_mwh[d.asset.id], rel=0.02, abs=1e-6)
        snapshot = f.anm.snapshot()
        total = sum(f.truth_mwh.values())
        assert total > 0.005
        assert snapshot["curtailment"]["by_agreement_mwh"][principle.value] == pytest.approx(total, rel=0.02)
        took = next(k for k in range(peak_cycle, len(over)) if over[k] < 1.0) - peak_cycle + 1
        print(
            f"ANM {principle.value}: under 100 % after {took} cycle(s) (bound {RELIEVED_WITHIN}), then at most "
            f"{max(over[peak_cycle + took - 1 :]):.3f}; set-points {f.anm.stats.submits}, curtailed "
            f"{', '.join(f'{k} {v * 1e3:.2f} kWh' for k, v in f.truth_mwh.items())}"
        )


@pytest.mark.asyncio
async def test_a_der_that_ignores_its_limit_escalates_to_alarm_fail_safe_and_trip(grid: Grid, tmp_path: Path) -> None:
    n = 2
    settings = AnmSettings(escalate_cycles=n, max_gap_s=2 * CYCLE_S)
    async with field(grid, tmp_path, AccessPrinciple.LIFO, settings=settings, fail_safe_kw=PV_KW, deaf=("PV 3",)) as f:
        while f.sim.step < 2:  # up to the peak
            await f.run_cycle()
        levels: list[Escalation] = []
        for _ in range(3 * n + 1):
            await f.run_cycle()
            levels += [c.escalation for c in f.anm.constraints()]
            if not f.sim.switch_closed("PV 3 switch"):
                break
        kinds = [e.payload.get("level") for e in f.historian.events.find(kind="anm.escalated")]
        assert kinds == ["alarm", "fail_safe", "trip"]
        assert not f.sim.switch_closed("PV 3 switch"), "the DER that ignored its limit is tripped"
        (trip,) = f.historian.events.find(kind="anm.trip")
        assert trip.payload["asset"] == "A3"
        assert trip.payload["status"] == "completed"
        # with PV 3 off the cable, it is under its rating again
        await f.run_cycle()
        assert f.loading() < 1.0


@pytest.mark.asyncio
async def test_stale_or_failed_state_changes_nothing(grid: Grid, tmp_path: Path) -> None:
    async with field(grid, tmp_path, AccessPrinciple.LIFO) as f:
        while f.sim.step < 2:
            await f.run_cycle(at=f.now() - timedelta(hours=1))  # an estimate an hour old
        assert f.loading() > 1.0
        assert f.anm.stats.submits == 0
        assert f.anm.stats.stale_cycles >= 1
        assert not f.anm.constraints()
        assert all(f.arbiter.requests(d.point) == {} for d in f.ders)
        # a fresh estimate that did not converge: no action either
        fresh = f.cycle.run(dict(f.latest), now=f.now())
        assert fresh.estimation.converged
        failed = replace(fresh, estimation=replace(fresh.estimation, converged=False, error="singular matrix"))
        stale = f.anm.stats.stale_cycles
        assert await f.anm.step(failed) == []
        assert f.anm.stats.stale_cycles == stale + 1
        assert f.anm.stats.submits == 0
        # a fresh, converged estimate: acted on at once
        assert await f.anm.step(fresh) == ["PV 3/p_limit"]  # last in, first off
        assert f.anm.constraints()
        await f.poll()
        assert f.loading() < 1.0


@pytest.mark.asyncio
async def test_a_voltage_constraint_is_relieved_and_released(grid: Grid, tmp_path: Path) -> None:
    """A node over its voltage trigger (set low here: the peak lifts Node 3 to about 1.07 p.u.)."""
    settings = AnmSettings(trigger_loading=2.0, u_trigger_pu=1.06, u_target_pu=1.055, u_release_pu=1.05)
    async with field(grid, tmp_path, AccessPrinciple.LIFO, settings=settings) as f:
        u_max: list[float] = []
        first: int | None = None
        for k in range(int(len(PROFILE) * STEP_S / CYCLE_S) - 1):
            await f.run_cycle()
            u_max.append(float(f.sim.result.output["node"]["u_pu"].max()))
            if first is None and f.anm.constraints():
                first = k
                assert "node:Node 3" in {c.element for c in f.anm.constraints()}
        assert first is not None
        assert max(u_max[first + RELIEVED_WITHIN - 1 :]) < 1.06, u_max
        assert f.limits["A3"][first] is not None  # the newest first
        assert f.limits["A1"][first] is None
        assert not f.anm.constraints()  # released after the peak
        assert all(f.anm.limit(d.point) is None for d in f.ders)

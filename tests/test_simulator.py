"""Field simulator: the twin's values against pandapower, scripted events, commands, and serving
over a real Modbus TCP server (read back by ModbusPoller) and through Mosquitto (MqttSubscriber).

Broker policy as in test_mqtt.py: ``OPENDSO_TEST_MQTT_URL`` (default ``mqtt://127.0.0.1:1883``);
an unreachable broker fails the test under ``CI=true`` and skips it otherwise.
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pandapower.topology as ppt
import pytest
import simbench
from leaks import assert_no_leaks
from pymodbus.client import AsyncModbusTcpClient

from opendso.errors import CommandError, InputError, ScenarioError
from opendso.grid.model import Grid
from opendso.grid.sources import load_simbench_net
from opendso.telemetry import Measurement, ModbusPoller, MqttSubscriber, Quality
from opendso.telemetry.modbus import encode_value
from opendso.telemetry.points import Point, PointMap, point_map_for_grid
from opendso.telemetry.scenario import Scenario, ScenarioEvent, parse_scenario, read_scenario, scenario_of
from opendso.telemetry.simulator import FieldSimulator, with_fault_indicators
from opendso.telemetry.simulator.indicators import indicators_on_fault_path

CODE = "1-MV-urban--0-sw"
SOURCE = f"simbench:{CODE}"
STEP = 44  # 11:00 on 1 January 2016
MIDDAY = 172 * 96 + 48  # 12:00 on 21 June 2016
BROKER_URL = os.environ.get("OPENDSO_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
#: Real seconds between the simulator's publishes (and the pollers' polls) in the protocol tests.
PERIOD_S = 0.1
#: Staleness limit in periods: a point goes stale only after this many periods without news, so
#: a publish delayed by a busy machine (two CPU-bound processes beside the tests) is not taken
#: for a lost point; the tests that wait for staleness wait this long, no more.
STALE_PERIODS = 20
#: Upper bound for one wait in those tests: long enough for a stale mark on a loaded machine.
WAIT_S = 4 * STALE_PERIODS * PERIOD_S + 10.0


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """No server, client, thread or broker connection of a test outlives it."""
    with assert_no_leaks():
        yield


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(SOURCE)


@cache
def _reference_net() -> Any:
    """pandapower's net of the same SimBench code, taps honoured (see NOTES.md), at STEP's profile values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_simbench_net(CODE)
        absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    net.trafo["tap_changer_type"] = "Ratio"
    net.load["p_mw"] = absolute[("load", "p_mw")].loc[STEP]
    net.load["q_mvar"] = absolute[("load", "q_mvar")].loc[STEP]
    net.sgen["p_mw"] = absolute[("sgen", "p_mw")].loc[STEP]
    return net


def _run_reference(net: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-9, calculate_voltage_angles=True)
    return net


def _voltage_sensor_buses(grid: Grid) -> dict[str, int]:
    """Voltage point name -> pandapower bus index of the node it measures."""
    node_ids = grid.component("node")["id"]
    source_index = grid.extra["node"]["source_index"]
    sensors = grid.sensors["sym_voltage_sensor"]
    out = {}
    for name, node in zip(grid.names_of("sym_voltage_sensor"), sensors["measured_object"], strict=True):
        out[f"{name}/u"] = int(source_index[int(np.flatnonzero(node_ids == node)[0])])
    return out


def _u_rated(grid: Grid, point: str) -> float:
    sensors = grid.sensors["sym_voltage_sensor"]
    row = int(np.flatnonzero(grid.names_of("sym_voltage_sensor") == point.removesuffix("/u"))[0])
    node_row = grid.node_positions([sensors["measured_object"][row]])[0]
    return float(grid.component("node")["u_rated"][node_row])


def _feeder_breaker(grid: Grid, point_map: PointMap) -> tuple[str, list[str]]:
    """A closed circuit breaker whose opening de-energises some voltage sensors; (name, those points)."""
    sim = FieldSimulator(grid, point_map, noise=0, start_step=STEP)
    volts = [p.name for p in point_map.points if p.quantity == "u"]
    for name, kind, closed in zip(grid.switch_names, grid.switch_kinds, grid.switches["closed"], strict=True):
        if kind != "CB" or not closed:
            continue
        sim.set_switch(str(name), False)
        dead = [v for v in volts if sim.exact_values()[v] == 0.0]
        sim.set_switch(str(name), True)
        if dead and len(dead) < len(volts):
            return str(name), dead
    raise AssertionError("no feeder breaker de-energises a voltage sensor")


# -- in-process ---------------------------------------------------------------------------------------
def test_values_equal_pandapower_power_flow(grid: Grid) -> None:
    point_map = point_map_for_grid(grid)
    sim = FieldSimulator(grid, point_map, noise=0, start_step=STEP)
    values = sim.values()
    net = _run_reference(_reference_net())
    for point, bus in _voltage_sensor_buses(grid).items():
        u_pu = values[point][0] / _u_rated(grid, point)
        assert abs(u_pu - float(net.res_bus.vm_pu.at[bus])) < 1e-5, point
        assert values[point][1] == Quality.GOOD
    closed = dict(zip(net.switch.name, net.switch.closed, strict=True))
    for p in point_map.points:
        if p.quantity == "switch":
            assert values[p.name][0] == float(closed[p.element]), p.name
    assert sim.counters.power_flows == 1
    assert sim.simulated_clock().isoformat() == "2016-01-01T11:00:00+00:00"


def test_one_power_flow_per_step_and_change(grid: Grid) -> None:
    sim = FieldSimulator(grid, point_map_for_grid(grid), noise=1.0, seed=3, start_step=STEP)
    sim.values()
    sim.advance(300)  # within the quarter-hour: values held, fresh noise only
    first, second = sim.values(), sim.values()
    assert sim.counters.power_flows == 1
    u = "MV3.101 Measurement 3/u"
    assert first[u][0] != second[u][0]  # noise is drawn per publish
    sim.advance(600)  # next quarter-hour
    sim.values()
    assert sim.counters.power_flows == 2
    assert sim.step == STEP + 1
    gen = str(grid.names_of("sym_gen")[0])
    sim.set_generator_p(gen, 0.0)
    sim.values()
    sim.values()
    assert sim.counters.power_flows == 3


def test_breaker_trip_de_energises_like_pandapower_and_sets_fault_indicators(grid: Grid) -> None:
    point_map = with_fault_indicators(point_map_for_grid(grid), grid)
    breaker, dead_points = _feeder_breaker(grid, point_map)
    # fault at the node of one of the de-energised voltage sensors
    sensors = grid.sensors["sym_voltage_sensor"]
    row = int(np.flatnonzero(grid.names_of("sym_voltage_sensor") == dead_points[0].removesuffix("/u"))[0])
    fault_node = str(grid.names_of("node")[grid.node_positions([sensors["measured_object"][row]])[0]])
    scenario = scenario_of([ScenarioEvent(at_s=60, kind="breaker_trip", switch=breaker, fault=fault_node)])
    sim = FieldSimulator(grid, point_map, noise=0, start_step=STEP, scenario=scenario)
    before = sim.values()
    assert all(before[p][0] > 0 for p in dead_points)
    assert before[f"{breaker}/fpi"][0] == 0.0
    sim.advance(120)
    after = sim.values()
    assert after[f"{breaker}/switch"][0] == 0.0
    assert not sim.switch_closed(breaker)

    net = _reference_net()
    net.switch.loc[net.switch.name == breaker, "closed"] = False
    try:
        unsupplied = ppt.unsupplied_buses(net)
        _run_reference(net)
        for point, bus in _voltage_sensor_buses(grid).items():
            if bus in unsupplied:
                assert after[point][0] == 0.0, point
            else:
                assert abs(after[point][0] / _u_rated(grid, point) - float(net.res_bus.vm_pu.at[bus])) < 1e-5, point
    finally:
        net.switch.loc[net.switch.name == breaker, "closed"] = True
    assert {p for p, b in _voltage_sensor_buses(grid).items() if b in unsupplied} == set(dead_points)
    # the indicator of the tripped breaker (on the source path to the fault) picked up; some elsewhere did not
    assert after[f"{breaker}/fpi"][0] == 1.0
    fpis = [p.name for p in point_map.points if p.quantity == "fpi"]
    assert 0 < sum(after[p][0] for p in fpis) < len(fpis)
    # reclosing the breaker restores supply and resets the indicators
    sim.set_switch(breaker, True)
    restored = sim.values()
    assert all(restored[p][0] > 0 for p in dead_points)
    assert all(restored[p][0] == 0.0 for p in fpis)


def test_a_permanent_fault_trips_again_until_it_is_isolated(grid: Grid) -> None:
    point_map = with_fault_indicators(point_map_for_grid(grid), grid)
    breaker, dead_points = _feeder_breaker(grid, point_map)
    sensors = grid.sensors["sym_voltage_sensor"]
    row = int(np.flatnonzero(grid.names_of("sym_voltage_sensor") == dead_points[-1].removesuffix("/u"))[0])
    fault_node = str(grid.names_of("node")[grid.node_positions([sensors["measured_object"][row]])[0]])
    events = [
        ScenarioEvent(at_s=60, kind="breaker_trip", switch=breaker, fault=fault_node, permanent=True),
        ScenarioEvent(at_s=600, kind="fault_clear"),
    ]
    sim = FieldSimulator(grid, point_map, noise=0, start_step=STEP, scenario=scenario_of(events))
    sim.advance(120)
    assert not sim.switch_closed(breaker)
    # reclosing onto the permanent fault: the nearest breaker upstream of the fault trips again
    sim.set_switch(breaker, True)
    assert sim.exact_values()[dead_points[-1]] == 0.0
    assert sim.values()[f"{breaker}/fpi"][0] == 1.0
    path = indicators_on_fault_path(grid, fault_node)
    assert path is not None
    tripped = [
        str(n)
        for n, on, kind in zip(grid.switch_names, path.switches, grid.switch_kinds, strict=True)
        if on and kind == "CB" and not sim.switch_closed(str(n))
    ]
    assert len(tripped) == 1  # one breaker, the one nearest the fault
    # after the repair (fault_clear) the fault is gone: the breakers close again and stay closed
    sim.advance(600)
    for name in tripped:
        sim.set_switch(name, True)
    assert sim.switch_closed(breaker)
    assert all(sim.switch_closed(name) for name in tripped)
    assert sim.exact_values()[dead_points[-1]] > 0.0
    assert sim.values()[f"{breaker}/fpi"][0] == 0.0


def test_der_trip_load_and_pv_scaling_and_set_point(grid: Grid) -> None:
    midday = FieldSimulator(grid, point_map_for_grid(grid), noise=0, start_step=MIDDAY)
    gen = str(grid.names_of("sym_gen")[int(np.argmax(midday.result.output["sym_gen"]["p"]))])
    gen_point = Point(f"{gen}/p", gen, "p", "W", "field", register=2000)
    base_map = point_map_for_grid(grid)
    point_map = PointMap(base_map.file, base_map.sources, (*base_map.points, gen_point))
    events = [
        ScenarioEvent(at_s=900, kind="der_trip", generator=gen),
        ScenarioEvent(at_s=900, kind="load_scale", factor=1.5),
        ScenarioEvent(at_s=900, kind="pv_scale", factor=3.0),
    ]
    sim = FieldSimulator(grid, point_map, noise=0, start_step=MIDDAY, scenario=scenario_of(events))
    assert sim.exact_values()[gen_point.name] > 0
    sim.apply_command(gen_point.name, 12_345.0)  # a set-point command
    assert sim.exact_values()[gen_point.name] == pytest.approx(12_345.0)
    sim.apply_command(gen_point.name, math.nan)  # released to the profile
    loads_before = sim.result.output["sym_load"]["p"].copy()
    solar = grid.extra["sym_gen"]["profile"] != "Hydro3"
    gens_before = sim.result.output["sym_gen"]["p"].copy()
    sim.advance(900)  # same step as STEP + 1: compare against a twin without events at that step
    reference = FieldSimulator(grid, point_map, noise=0, start_step=MIDDAY + 1)
    ref_loads = reference.result.output["sym_load"]["p"]
    ref_gens = reference.result.output["sym_gen"]["p"]
    assert not np.allclose(loads_before, ref_loads * 1.5)  # the step changed too
    np.testing.assert_allclose(sim.result.output["sym_load"]["p"], ref_loads * 1.5, rtol=1e-9)
    row = int(np.flatnonzero(grid.names_of("sym_gen") == gen)[0])
    assert sim.result.output["sym_gen"]["p"][row] == 0.0
    others = solar.copy()
    others[row] = False
    np.testing.assert_allclose(sim.result.output["sym_gen"]["p"][others], ref_gens[others] * 3.0, rtol=1e-9)
    assert gens_before.shape == ref_gens.shape
    with pytest.raises(CommandError, match="takes no commands"):
        sim.apply_command("MV3.101 Measurement 3/u", 1.0)
    with pytest.raises(CommandError, match="unknown point"):
        sim.apply_command("nope", 1.0)


def test_frozen_and_noisy_sensors(grid: Grid) -> None:
    frozen, noisy, normal = "MV3.101 Measurement 3/u", "MV3.101 Measurement 13/u", "MV3.101 Measurement 24/u"
    events = [
        ScenarioEvent(at_s=0, kind="freeze", points=(frozen,), duration_s=3600),
        ScenarioEvent(at_s=0, kind="noisy", points=(noisy,), factor=10),
    ]
    sim = FieldSimulator(
        grid, point_map_for_grid(grid), noise=1.0, seed=7, start_step=STEP, scenario=scenario_of(events)
    )
    first = sim.values()
    sim.advance(1)
    draws: dict[str, list[float]] = {frozen: [], noisy: [], normal: []}
    exact: dict[str, list[float]] = {noisy: [], normal: []}
    for _ in range(400):
        values = sim.values()
        for name, series in draws.items():
            series.append(values[name][0])
        truth = sim.exact_values()
        for name, series in exact.items():
            series.append(truth[name])
    assert set(draws[frozen]) == {first[frozen][0]}
    err_noisy = np.std(np.array(draws[noisy]) - np.array(exact[noisy]))
    err_normal = np.std(np.array(draws[normal]) - np.array(exact[normal]))
    assert 7 < err_noisy / err_normal < 13
    sim.advance(3600)  # the freeze ends
    assert sim.values()[frozen][0] != first[frozen][0]


# -- bad scenarios ---------------------------------------------------------------------------------
def test_bad_scenarios_are_named(grid: Grid, tmp_path: Path) -> None:
    point_map = point_map_for_grid(grid)
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([{"at": 0, "kind": "breaker_trip", "switch": "no such switch"}], r"event #1 \(breaker_trip\), field switch"),
        ([{"at": 0, "kind": "meteor_strike"}], r"event #1, field kind: unknown event kind 'meteor_strike'"),
        (
            [{"at": "01:00", "kind": "fault_clear"}, {"at": 60, "kind": "der_trip", "generator": "x"}],
            r"event #2 \(der_trip\), field at: time 60 s goes back before event #1",
        ),
        (
            [{"at": 0, "kind": "der_trip", "generator": "ghost"}],
            r"event #1 \(der_trip\), field generator: no generator",
        ),
        ([{"at": 0, "kind": "freeze"}], r"event #1 \(freeze\), field points: missing"),
        ([{"at": 0, "kind": "noisy", "points": ["ghost/u"]}], r"event #1 \(noisy\), field points: no point 'ghost/u'"),
        ([{"at": -5, "kind": "fault_clear"}], r"event #1 \(fault_clear\), field at"),
        ([{"at": 0, "kind": "load_scale", "factor": -1}], r"event #1 \(load_scale\), field factor: must be >= 0"),
        (
            [{"at": 0, "kind": "breaker_trip", "switch": "x", "permanent": "yes"}],
            r"event #1 \(breaker_trip\), field permanent: must be true or false",
        ),
        (
            [{"at": 0, "kind": "switch_close", "switch": "x", "permanent": True}],
            r"event #1 \(switch_close\), field permanent",
        ),
    ]
    for events, pattern in cases:
        with pytest.raises(ScenarioError, match=pattern):
            FieldSimulator(grid, point_map, scenario=parse_scenario({"events": events}, file="s.toml"))
    # the error is an InputError (exit status 2) and lists every problem at once
    with pytest.raises(InputError) as info:
        parse_scenario({"events": [{"at": 0, "kind": "x"}, {"kind": "load_scale", "factor": "big"}]}, file="s.toml")
    assert len(info.value.findings) == 3  # type: ignore[attr-defined]
    path = tmp_path / "scenario.toml"
    path.write_text('name = "storm"\n[[events]]\nat = "00:15"\nkind = "comms_loss"\nsource = "field"\n')
    scenario = read_scenario(path)
    assert scenario == Scenario((ScenarioEvent(at_s=900.0, kind="comms_loss", source="field"),), "storm", str(path))
    path.write_text("[[events]\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        read_scenario(path)


# -- over the real protocols -------------------------------------------------------------------------
async def _collect(
    adapter: Any, until: Callable[[dict[str, Measurement]], bool], timeout: float = WAIT_S
) -> dict[str, Measurement]:
    latest: dict[str, Measurement] = {}
    async with asyncio.timeout(timeout):
        while not until(latest):
            for m in await adapter.next_batch():
                latest[m.point] = m
    return latest


@pytest.mark.asyncio
async def test_modbus_serves_the_twin_takes_commands_and_goes_stale(grid: Grid) -> None:
    point_map = point_map_for_grid(grid, port=0, stale_after_s=STALE_PERIODS * PERIOD_S, poll_period_s=PERIOD_S)
    breaker, dead_points = _feeder_breaker(grid, point_map)
    lost_point = "MV3.101 Measurement 10/p"
    events = [
        ScenarioEvent(at_s=10 * 60, kind="comms_loss", points=(lost_point,)),
        ScenarioEvent(at_s=20 * 60, kind="comms_loss", source="field"),
    ]
    sim = FieldSimulator(
        grid,
        point_map,
        noise=0,
        start_step=STEP,
        speed=1.0,  # the comms loss comes only when advanced by hand
        publish_period_s=PERIOD_S,
        scenario=scenario_of(events),
        server_options={"field": {"port": 0}},
    )
    async with sim:
        port = sim.servers[0].port  # type: ignore[attr-defined]
        poller = ModbusPoller(name="mb", point_map=point_map, source="field", port=port)
        async with poller:
            names = {p.name for p in point_map.points}
            got = await _collect(poller, lambda latest: set(latest) == names)
            await asyncio.sleep(0.25)  # two publish periods: the clock moves with the wall clock (x speed)
            assert 0.1 < sim.elapsed_s < 5
            exact = sim.exact_values()
            for name, m in got.items():
                assert m.quality == Quality.GOOD
                assert m.value == pytest.approx(exact[name], rel=1e-6, abs=1e-6), name  # float32 on the wire
            # a switch command through a register write changes the twin
            register = point_map.point(f"{breaker}/switch").register
            assert register is not None
            client = AsyncModbusTcpClient("127.0.0.1", port=port)
            await client.connect()
            try:
                response = await client.write_register(register, encode_value(0.0, "uint16")[0], device_id=1)
                assert not response.isError()
            finally:
                client.close()
            assert not sim.switch_closed(breaker)
            after = await _collect(
                poller, lambda latest: all(p in latest and latest[p].value == 0.0 for p in dead_points)
            )
            assert all(after[p].quality == Quality.GOOD for p in dead_points)
            # a point behind a gateway that stops answering turns invalid; then the whole source is lost: stale
            sim.advance(10 * 60)
            lost = await _collect(poller, lambda latest: latest.get(lost_point, got[lost_point]).quality != 0)
            assert lost[lost_point].quality & Quality.IV
            sim.advance(10 * 60)
            stale = await _collect(
                poller,
                lambda latest: len(latest) == len(names) and all(m.quality & Quality.NT for m in latest.values()),
            )
            assert len(stale) == len(names)
    assert sim.counters.commands == 1
    assert sim.counters.refused_commands == 0


@pytest.mark.asyncio
async def test_mqtt_publishes_the_twin_and_lost_points_go_stale(grid: Grid, broker_url: str) -> None:
    prefix = f"opendso-test/{uuid.uuid4().hex}/"
    full = point_map_for_grid(grid, protocol="mqtt", topic_prefix=prefix, stale_after_s=STALE_PERIODS * PERIOD_S)
    lost_element = "MV3.101 Measurement 10"
    # A dozen topics, not the grid's 341 points: one QoS 1 message per topic and publish made a
    # cycle of the whole map take 0.25 s idle and 2 s beside two busy CPUs, longer than the period.
    elements = {lost_element, *sorted({p.element for p in full.points})[:11]}
    point_map = PointMap(full.file, full.sources, tuple(p for p in full.points if p.element in elements))
    lost = {f"{lost_element}/p", f"{lost_element}/q"}
    events = [ScenarioEvent(at_s=60, kind="comms_loss", element=lost_element)]
    sim = FieldSimulator(
        grid,
        point_map,
        noise=0,
        start_step=STEP,
        speed=1.0,  # the comms loss comes only when advanced by hand
        publish_period_s=PERIOD_S,
        scenario=scenario_of(events),
        server_options={"field": {"broker_url": broker_url}},
    )
    subscriber = MqttSubscriber(name="mqtt", point_map=point_map, source="field", broker_url=broker_url)
    names = {p.name for p in point_map.points}
    # The twin publishes first: its first power flow may take long on a busy machine, and a
    # subscriber started before it would count that time against the staleness limit.
    async with sim, subscriber:
        await subscriber.wait_subscribed()
        got = await _collect(subscriber, lambda latest: set(latest) == names)
        exact = sim.exact_values()
        for name, m in got.items():
            assert m.quality == Quality.GOOD, name
            assert m.value == exact[name], name  # JSON carries doubles exactly
        sim.advance(60)
        stale = await _collect(
            subscriber,
            lambda latest: all(p in latest and latest[p].quality & Quality.NT for p in lost) and set(latest) == names,
        )
        # the other points of the source keep arriving, good
        assert all(m.quality == Quality.GOOD for name, m in stale.items() if name not in lost)
        assert all(stale[p].value == got[p].value for p in lost)  # last value kept, flagged not topical
    assert sim.counters.publishes >= 2

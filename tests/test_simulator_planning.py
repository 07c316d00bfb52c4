"""Field simulator, the package's seams: point planning through the one binding, fault-passage
indicators, and the package surface.

The plan fills the point vector by index from the power-flow output; these tests check it
against a lookup by name, refuse points the simulator cannot compute (every one named in one
error), and pin what ``opendso.telemetry.simulator`` exports.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import typing
from collections.abc import Callable

import numpy as np
import pytest
from conftest import feeder_breaker

import opendso.telemetry.simulator as simulator_package
from opendso.calc import DEFAULT_ACCURACY
from opendso.errors import PointMapError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.telemetry.binding import bind_points
from opendso.telemetry.points import Point, PointMap, point_map_for_grid
from opendso.telemetry.simulator import FieldSimulator, with_fault_indicators
from opendso.telemetry.simulator.indicators import indicators_on_fault_path
from opendso.telemetry.simulator.planning import plan_points

SOURCE = "demo"
STEP = 48


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(SOURCE)


def _extra_points(grid: Grid, start_register: int) -> list[Point]:
    """Points naming nodes, appliances and branches directly (not through a sensor placement)."""
    wanted = (
        ("node", ("u",)),
        ("sym_load", ("p", "q")),
        ("sym_gen", ("p", "q")),
        ("source", ("p", "q")),
        ("line", ("p", "q", "i")),
        ("transformer", ("p", "q", "i")),
    )
    points: list[Point] = []
    for component, quantities in wanted:
        for name in grid.names_of(component)[:3]:
            for quantity in quantities:
                register = start_register + 2 * len(points)
                points.append(
                    Point(f"{name}/{component}/{quantity}", str(name), quantity, "", "field", register=register)
                )
    return points


def _with(point_map: PointMap, points: list[Point]) -> PointMap:
    return PointMap(point_map.file, point_map.sources, point_map.points + tuple(points))


def test_the_point_vector_is_gathered_by_index_like_a_lookup_by_name(grid: Grid) -> None:
    base = with_fault_indicators(point_map_for_grid(grid), grid)
    extra = _extra_points(grid, 20_000)
    sim = FieldSimulator(grid, _with(base, extra), noise=0, start_step=STEP, servers=[])
    exact = sim.exact_values()
    output = sim.result.output
    for p in extra:
        component = p.name.split("/")[-2]
        row = int(np.flatnonzero(grid.names_of(component) == p.element)[0])
        suffix = "" if component in ("node", "sym_load", "sym_gen", "source") else "_from"
        assert exact[p.name] == float(output[component][p.quantity + suffix][row]), p.name
    closed = dict(zip(grid.switch_names.tolist(), grid.switches["closed"].tolist(), strict=True))
    for p in base.points:
        if p.quantity == "switch":
            assert exact[p.name] == float(closed[p.element]), p.name
        elif p.quantity == "fpi":
            assert exact[p.name] == 0.0, p.name
        else:
            assert math.isfinite(exact[p.name]), p.name
    # one binding, made once, is what the simulator keeps
    assert sim.binding.names == tuple(p.name for p in sim.point_map.points)


def test_points_the_simulator_cannot_compute_are_all_named_in_one_error(grid: Grid) -> None:
    base = point_map_for_grid(grid)
    node, line = str(grid.names_of("node")[0]), str(grid.names_of("line")[0])
    load, link = str(grid.names_of("sym_load")[0]), str(grid.names_of("link")[0])
    hostile = [
        Point("bad/i of a node", node, "i", "A", "field", register=30_000),
        Point("bad/tap of a line", line, "tap", "", "field", register=30_002),
        Point("bad/switch of a node", node, "switch", "", "field", register=30_004),
        Point("bad/fpi of a load", load, "fpi", "", "field", register=30_006),
        Point("bad/p of a link", link, "p", "W", "field", register=30_008),
        Point("bad/unknown element", "no such element \u0000\n", "u", "V", "field", register=30_010),
    ]
    with pytest.raises(PointMapError) as caught:
        FieldSimulator(grid, _with(base, hostile), noise=0, start_step=STEP, servers=[])
    named = {f.point for f in caught.value.findings}
    assert named == {p.name for p in hostile}
    # the valid points alone are served
    FieldSimulator(grid, base, noise=0, start_step=STEP, servers=[])


def test_a_plan_without_a_power_flow_serves_switch_states_and_indicators_only(grid: Grid) -> None:
    point_map = with_fault_indicators(point_map_for_grid(grid), grid)
    binding = bind_points(grid, point_map)
    plan = plan_points(binding)
    closed = grid.switches["closed"].astype(np.int8)
    picked = np.zeros(closed.size, dtype=bool)
    picked[0] = True
    sensor_ids = {int(grid.sensors["sym_power_sensor"]["id"][0]), -12345}  # an id no point carries is ignored
    values = plan.evaluate(grid, None, DEFAULT_ACCURACY, closed=closed, fpi_switches=picked, fpi_sensors=sensor_ids)
    quantities = binding.quantities
    measured = np.isin(quantities, ["u", "p", "q", "i"])
    assert np.isnan(values.exact[measured]).all()
    assert np.isfinite(values.exact[~measured]).all()
    fpi = np.flatnonzero(quantities == "fpi")
    assert values.exact[fpi].sum() == 2.0  # switch 0 and the one sensor
    assert plan.size == len(point_map.points)
    assert not plan.noisy[~measured].any()
    assert plan.noisy[measured].all()


def test_fault_path_indicators(grid: Grid) -> None:
    row = feeder_breaker(grid)
    closed = grid.switches["closed"].copy()
    closed[row] = 0
    opened = grid.with_switch_states(closed)
    energised = analyse_topology(opened).node_energised
    dead_node = str(grid.names_of("node")[int(np.flatnonzero(~energised)[0])])
    # behind an open breaker the fault is not energised: nothing picks up
    assert indicators_on_fault_path(opened, dead_node) is None
    path = indicators_on_fault_path(grid, dead_node)
    assert path is not None
    assert path.switches[row]  # the feeder breaker sits between the source and the fault
    assert 0 < int(path.switches.sum()) < closed.size
    assert path.switches.shape == closed.shape


def test_the_package_surface_is_pinned_and_names_no_protocol_of_its_own() -> None:
    assert simulator_package.__all__ == sorted(simulator_package.__all__)
    assert set(simulator_package.__all__) == {
        "CommandCallback",
        "CommandError",
        "CommandValueError",
        "DerSettings",
        "DerState",
        "FieldServer",
        "FieldSimulator",
        "Iec104FieldServer",
        "ModbusFieldServer",
        "MqttFieldServer",
        "NotCommandableError",
        "ServerFactory",
        "SimulatorCounters",
        "default_server_factories",
        "der_points",
        "with_fault_indicators",
    }
    for info in pkgutil.iter_modules(simulator_package.__path__):
        module = importlib.import_module(f"{simulator_package.__name__}.{info.name}")
        protocol = getattr(module, "Protocol", typing.Protocol)
        assert protocol is typing.Protocol, module.__name__
        for name in getattr(module, "__all__", ()):
            assert getattr(module, name) is not None, (module.__name__, name)

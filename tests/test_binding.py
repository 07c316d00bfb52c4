"""The one binding of telemetry points to a grid: targets, rows, fields, findings, index arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from opendso.errors import PointMapError
from opendso.grid.model import Grid
from opendso.telemetry.binding import (
    FPI,
    MEASURED_QUANTITIES,
    SENSOR_FIELDS,
    SENSOR_QUANTITIES,
    STATE_QUANTITIES,
    SWITCH,
    Target,
    bind_points,
)
from opendso.telemetry.points import Point, PointMap, point_map_for_grid


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


def _name(grid: Grid, component: str, row: int = 0) -> str:
    return str(grid.names_of(component)[row])


def test_a_grids_own_point_map_binds_every_point_to_its_placement_or_switch(grid: Grid) -> None:
    pm = point_map_for_grid(grid)
    b = bind_points(grid, pm)
    assert len(b) == len(pm.points)
    assert b.findings == ()
    assert b.file == pm.file
    assert b.names == tuple(p.name for p in pm.points)
    for k, p in enumerate(pm.points):
        assert b.index[p.name] == k
        if p.quantity == SWITCH:
            assert b.target[k] == Target.SWITCH
            assert b.component[k] == "switch"
            assert grid.switch_names[b.row[k]] == p.element
            assert b.element_id[k] == grid.switches["id"][b.row[k]]
            continue
        component = str(b.component[k])
        assert b.target[k] == Target.SENSOR
        assert p.quantity in SENSOR_QUANTITIES[component]
        assert grid.names_of(component)[b.row[k]] == p.element
        assert b.element_id[k] == grid.sensors[component]["id"][b.row[k]]
        assert b.measured_field[k] == SENSOR_FIELDS[(component, p.quantity)].value
        terminal = grid.sensors[component].dtype.names or ()
        expected_side = (
            grid.sensors[component]["measured_terminal_type"][b.row[k]] if "measured_terminal_type" in terminal else -1
        )
        assert b.side[k] == expected_side


def test_values_scatter_into_the_sensor_arrays_by_index(grid: Grid) -> None:
    pm = point_map_for_grid(grid)
    b = bind_points(grid, pm)
    values = np.arange(len(b), dtype=float)
    for (component, quantity), (points, rows) in b.groups(Target.SENSOR, quantities=MEASURED_QUANTITIES).items():
        array = np.full(grid.sensors[component].size, np.nan)
        array[rows] = values[points]
        for k, row in zip(points.tolist(), rows.tolist(), strict=True):
            assert pm.points[k].element == grid.names_of(component)[row]
            assert pm.points[k].quantity == quantity
            assert array[row] == k
    switches = b.gather(Target.SWITCH, quantities={SWITCH})
    assert switches.points.size == grid.switch_names.size
    assert (np.diff(switches.points) > 0).all()  # point order


def test_nodes_appliances_branches_and_indicators_are_bound_by_quantity(grid: Grid) -> None:
    node, load, gen = _name(grid, "node"), _name(grid, "sym_load"), _name(grid, "sym_gen")
    line, trafo, link = _name(grid, "line"), _name(grid, "transformer"), _name(grid, "link")
    switch, sensor = str(grid.switch_names[0]), _name(grid, "sym_power_sensor")
    points = {
        "n/u": (node, "u"),
        "l/p": (load, "p"),
        "g/q": (gen, "q"),
        "line/i": (line, "i"),
        "t/p": (trafo, "p"),
        "sw/fpi": (switch, FPI),
        "s/fpi": (sensor, FPI),
    }
    b = bind_points(grid, points)
    assert b.findings == ()
    expect = {
        "n/u": (Target.NODE, "node"),
        "l/p": (Target.APPLIANCE, "sym_load"),
        "g/q": (Target.APPLIANCE, "sym_gen"),
        "line/i": (Target.BRANCH, "line"),
        "t/p": (Target.BRANCH, "transformer"),
        "sw/fpi": (Target.SWITCH, "switch"),
        "s/fpi": (Target.SENSOR, "sym_power_sensor"),
    }
    for name, (target, component) in expect.items():
        k = b.index[name]
        assert (b.target[k], b.component[k]) == (target, component), name
        assert b.row[k] >= 0
    assert b.side[b.index["line/i"]] == 0  # a branch is measured at its from end
    assert b.measured_field[b.index["s/fpi"]] is None  # an indicator is not a measured value
    assert b.element_id[b.index["s/fpi"]] == grid.sensors["sym_power_sensor"]["id"][0]
    # a link carries no measured flow: the element exists, the quantity has no place on it
    unbound = bind_points(grid, {"k/p": (link, "p")})
    assert unbound.target[0] == Target.NONE
    assert [(f.point, f.field) for f in unbound.findings] == [("k/p", "quantity")]


def test_every_point_without_a_place_gets_one_finding_and_require_raises_once(grid: Grid) -> None:
    gen, line = _name(grid, "sym_gen"), _name(grid, "line")
    points = {
        "ok/switch": (str(grid.switch_names[0]), SWITCH),
        "x/u": ("No Such Bus", "u"),
        "y/switch": ("nope", SWITCH),
        "z/fpi": ("gone", FPI),
        "line/fpi": (line, FPI),
        "line/tap": (line, "tap"),
        "line/switch": (line, SWITCH),
        "g/p": (gen, "p"),
    }
    b = bind_points(grid, points)
    assert [(f.point, f.field) for f in b.findings] == [
        ("x/u", "element"),
        ("y/switch", "element"),
        ("z/fpi", "element"),
        ("line/fpi", "quantity"),
        ("line/tap", "quantity"),
        ("line/switch", "quantity"),
    ]
    assert "No Such Bus" in b.findings[0].message
    assert "no switch 'nope'" in b.findings[1].message
    assert "no switch or sensor 'gone'" in b.findings[2].message
    # a consumer names what it cannot use: all problems in one error, in point order
    with pytest.raises(PointMapError) as info:
        b.require((Target.SENSOR, Target.NODE, Target.SWITCH), quantities=STATE_QUANTITIES, user="the cycle")
    assert [f.point for f in info.value.findings] == ["x/u", "y/switch", "line/switch", "g/p"]
    assert "the cycle cannot use 'p'" in str(info.value)
    # nothing to complain about when every point is usable
    ok = bind_points(grid, {"ok/switch": points["ok/switch"]})
    ok.require((Target.SWITCH,))


def test_one_name_in_several_tables_binds_where_the_quantity_has_a_place(grid: Grid) -> None:
    # the demo grid's bus-bus switches are links of the same name: the switch state goes to the switch
    shared = sorted({str(n) for n in grid.switch_names} & {str(n) for n in grid.names_of("link")})
    assert shared
    b = bind_points(grid, {"s": (shared[0], SWITCH)})
    assert (b.target[0], b.component[0]) == (Target.SWITCH, "switch")
    # a node and a load named alike (made here): u goes to the node, p to the load
    node_name = _name(grid, "node")
    names = dict(grid.names)
    loads = names["sym_load"].copy()
    loads[0] = node_name
    names["sym_load"] = loads
    from dataclasses import replace

    twin = replace(grid, names=names)
    b = bind_points(twin, {"u": (node_name, "u"), "p": (node_name, "p")})
    assert [b.component[0], b.component[1]] == ["node", "sym_load"]


def test_points_come_as_a_map_a_sequence_or_a_mapping(grid: Grid) -> None:
    pm = point_map_for_grid(grid)
    by_map = bind_points(grid, pm)
    by_points = bind_points(grid, pm.points, file="x.toml")
    by_mapping = bind_points(grid, {p.name: (p.element, p.quantity) for p in pm.points})
    for other in (by_points, by_mapping):
        assert other.names == by_map.names
        assert np.array_equal(other.target, by_map.target)
        assert np.array_equal(other.row, by_map.row)
    assert by_points.file == "x.toml"
    assert by_mapping.file == f"<points of {grid.name}>"


def test_hostile_input_is_bound_or_named_never_crashes(grid: Grid) -> None:
    empty = bind_points(grid, {})
    assert len(empty) == 0
    assert empty.gather(Target.SENSOR).points.size == 0
    assert empty.groups(Target.SENSOR) == {}
    empty.require(())
    odd = "\x00\x1b[31m\u202e bus \U0001f525\n"
    b = bind_points(grid, {odd: (odd, "u"), "": ("", ""), "q": (odd, "no-such-quantity")})
    assert [f.field for f in b.findings] == ["element", "element", "element"]
    text = str(PointMapError(b.file, b.findings))
    assert repr(odd) in text  # named, with control characters escaped (a log line stays one line)
    assert "\x1b" not in text
    assert "\n" not in text.split("\n  - ")[1]
    # a sequence may repeat a name: the index keeps the first
    p = Point("same", _name(grid, "node"), "u", "V", "field")
    twice = bind_points(grid, [p, p])
    assert twice.index["same"] == 0
    assert len(twice) == 2
    # a grid without sensors or switches binds nothing there
    bare = Grid(name="bare", input={"node": grid.component("node")}, names={"node": grid.names_of("node")})
    b = bind_points(bare, {"a": (_name(grid, "sym_power_sensor"), "p"), "b": (_name(grid, "node"), "u")})
    assert [int(t) for t in b.target] == [Target.NONE, Target.NODE]


def test_the_binding_arrays_are_read_only(grid: Grid) -> None:
    b = bind_points(grid, point_map_for_grid(grid))
    for array in (b.target, b.row, b.component, b.element_id, b.side, b.measured_field, b.quantities):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = array[0]


def test_point_map_checks_use_the_binding(grid: Grid) -> None:
    from opendso.telemetry.binding import validate_against_grid

    pm = point_map_for_grid(grid)
    extra = (
        Point("x/u", "No Such Bus", "u", "V", "field", register=9000),
        Point("line/tap", _name(grid, "line"), "tap", "", "field", register=9002),
    )
    bigger = PointMap(pm.file, pm.sources, pm.points + extra)
    # an unknown element is a finding of the map; a tap on a line is the consumer's question
    assert [(f.point, f.field) for f in validate_against_grid(bigger, grid)] == [("x/u", "element")]

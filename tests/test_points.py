"""Point maps: reading, validation (one error naming file, point and field), grid checks, writing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from opendso.errors import InputError, PointMapError
from opendso.grid.model import Grid
from opendso.telemetry import (
    Quality,
    assert_valid_against_grid,
    point_map_for_grid,
    read_point_map,
    validate_against_grid,
    write_point_map,
)

GOOD = """
version = 1

[sources.rtu-1]
protocol = "modbus"
host = "127.0.0.1"
port = 5020
unit_id = 3
poll_groups = { fast = 0.5, slow = 10 }

[sources.meters]
protocol = "mqtt"
topic_prefix = "opendso/field/"
stale_after_s = 60

[sources.sub-a]
protocol = "iec104"
host = "127.0.0.1"
port = 2404
common_address = 7

[[points]]
name = "T1/p"
element = "HV1-MV2.101-Trafo1"
quantity = "p"
source = "rtu-1"
register = 10
data_type = "int32"
word_order = "little"
scale = 1000.0
deadband = 500.0
poll_group = "fast"

[[points]]
name = "meter-1/u"
element = "MV2.101 Bus 4"
quantity = "u"
unit = "V"
source = "meters"
topic = "meter-1"
key = "u"
min_value = 0.0
max_value = 30000.0

[[points]]
name = "CB1/switch"
element = "LV5.220 Switch 214"
quantity = "switch"
source = "sub-a"
ioa = 101
type = "M_DP_NA_1"
"""


def test_reads_a_valid_point_map(tmp_path: Path) -> None:
    path = tmp_path / "points.toml"
    path.write_text(GOOD)
    pm = read_point_map(path)
    assert [p.name for p in pm.points] == ["T1/p", "meter-1/u", "CB1/switch"]
    t1 = pm.point("T1/p")
    assert (t1.unit, t1.register, t1.data_type, t1.word_order, t1.byte_order) == ("W", 10, "int32", "little", "big")
    assert t1.to_value(12) == 12_000.0
    assert t1.to_raw(12_000.0) == 12
    assert t1.register_count == 2
    assert pm.sources["rtu-1"].unit_id == 3
    assert pm.sources["rtu-1"].poll_groups == {"fast": 0.5, "slow": 10.0}
    assert pm.point("CB1/switch").common_address == 7  # inherited from the source
    assert pm.point("meter-1/u").in_range(10_000.0)
    assert not pm.point("meter-1/u").in_range(-1.0)
    assert not pm.point("CB1/switch").in_range(0.5)
    assert [s.name for s in pm.sources_of("mqtt")] == ["meters"]


def test_every_problem_is_named_in_one_error(tmp_path: Path) -> None:
    bad = """
version = 1
[sources.rtu]
protocol = "modbus"
port = 502
poll_groups = { fast = -1 }
[sources.x]
protocol = "dnp3"

[[points]]
name = "a"
element = "E"
quantity = "voltage"
source = "rtu"
register = 0
data_type = "float16"
word_order = "middle"

[[points]]
name = "b"
element = "E"
quantity = "p"
unit = "kW"
source = "rtu"
register = 1
topic = "t"
deadband = -2

[[points]]
name = "b"
element = "E"
quantity = "q"
source = "nowhere"

[[points]]
element = 5
quantity = "u"
source = "rtu"
register = "7"
colour = "red"
"""
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    with pytest.raises(PointMapError) as info:
        read_point_map(path)
    err = info.value
    assert isinstance(err, InputError)
    assert err.exit_code == 2
    where = {(f.point, f.field) for f in err.findings}
    expected = {
        (None, "sources.rtu.poll_groups.fast"),
        (None, "sources.x.protocol"),
        ("a", "quantity"),
        ("a", "data_type"),
        ("a", "word_order"),
        ("b", "unit"),
        ("b", "topic"),
        ("b", "deadband"),
        ("b", "source"),
        ("#4", "name"),
        ("#4", "element"),
        ("#4", "register"),
        ("#4", "colour"),
    }
    assert expected <= where, where - expected
    text = str(err)
    assert text.startswith(f"{path}: ")
    assert "point 'a', field data_type: unknown data_type 'float16'" in text
    assert "point 'b', field unit: quantity p is stored in 'W'" in text
    assert all(f.file == str(path) for f in err.findings)


def test_duplicate_names_and_overlapping_addresses(tmp_path: Path) -> None:
    text = """
[sources.rtu]
protocol = "modbus"
port = 502
[[points]]
name = "a"
element = "E"
quantity = "p"
source = "rtu"
register = 0
data_type = "float64"
[[points]]
name = "b"
element = "E"
quantity = "q"
source = "rtu"
register = 3
[[points]]
name = "a"
element = "E"
quantity = "u"
source = "rtu"
register = 20
"""
    path = tmp_path / "dup.toml"
    path.write_text(text)
    with pytest.raises(PointMapError) as info:
        read_point_map(path)
    messages = {(f.point, f.field): f.message for f in info.value.findings}
    assert "duplicate point name" in messages[("a", "name")]
    assert messages[("b", "register")] == "overlaps point 'a'"


def test_unreadable_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PointMapError, match=r"missing\.toml: 1 problem"):
        read_point_map(tmp_path / "missing.toml")
    path = tmp_path / "syntax.toml"
    path.write_text("[[points]\nname = 'x'\n")
    with pytest.raises(PointMapError, match=r"syntax\.toml.*not valid TOML.*line 1"):
        read_point_map(path)


def test_points_are_checked_against_a_grid(tmp_path: Path, grid_of: Callable[[str], Grid]) -> None:
    grid = grid_of("demo")
    path = tmp_path / "points.toml"
    path.write_text(GOOD.replace("MV2.101 Bus 4", "No Such Bus"))
    pm = read_point_map(path)
    findings = validate_against_grid(pm, grid)
    assert [(f.point, f.field) for f in findings] == [("meter-1/u", "element")]
    assert "No Such Bus" in findings[0].message
    with pytest.raises(PointMapError, match="No Such Bus"):
        assert_valid_against_grid(pm, grid)


@pytest.mark.parametrize("protocol", ["modbus", "mqtt", "iec104"])
def test_point_map_for_a_grid_round_trips(tmp_path: Path, grid_of: Callable[[str], Grid], protocol: str) -> None:
    grid = grid_of("demo")
    pm = point_map_for_grid(grid, protocol=protocol, port=1502, topic_prefix="t/")  # type: ignore[arg-type]
    n_sensors = {c: grid.sensors[c].size for c in ("sym_voltage_sensor", "sym_power_sensor", "sym_current_sensor")}
    quantities = [p.quantity for p in pm.points]
    assert quantities.count("u") == n_sensors["sym_voltage_sensor"]
    assert quantities.count("i") == n_sensors["sym_current_sensor"]
    assert 0 < quantities.count("p") <= n_sensors["sym_power_sensor"]
    assert quantities.count("switch") == grid.switch_names.size
    assert not validate_against_grid(pm, grid)
    path = write_point_map(pm, tmp_path / f"{protocol}.toml")
    back = read_point_map(path)
    assert back.points == pm.points
    assert dict(back.sources) == dict(pm.sources)


def test_quality_maps_iec104_qds() -> None:
    # the IEC 104 names are aliases of the IEC 61850 flags, and QDS octets convert both ways
    assert Quality.STALE is Quality.NT
    assert Quality.INVALID is Quality.IV
    assert Quality.GOOD.is_good
    assert (Quality.NT | Quality.IV).to_qds() == 0xC0
    assert Quality.from_qds(0x01) is Quality.OVERFLOW
    assert Quality.from_qds(0x10) is Quality.BLOCKED
    assert Quality.from_qds(0x20) is Quality.SUBSTITUTED
    assert Quality.from_qds(0xFF) == Quality.OV | Quality.BL | Quality.SB | Quality.NT | Quality.IV


def test_names_with_control_characters_round_trip_as_valid_toml(tmp_path: Path) -> None:
    import tomllib

    from opendso.telemetry.points import Connection, Point, PointMap

    hostile = 'bus "7"\\\x00\x01\x08\t\n\r\x1b\x7f \u202e \U0001f525 \'"""'
    sources = {
        "rtu 1\x1f": Connection("rtu 1\x1f", "modbus", port=502, poll_groups={"fast\x02": 1.0}),
        "broker": Connection("broker", "mqtt", topic_prefix="a/\x03"),
        "sub": Connection("sub", "iec104", port=2404, common_address=9),
    }
    points = (
        Point(hostile, hostile, "p", "W", "rtu 1\x1f", register=0, poll_group="fast\x02", min_value=-1.5),
        Point("m", "e\x1e", "u", "V", "broker", topic="t\x04", key="k\x05"),
        Point("s", "sw", "switch", "", "sub", common_address=9, ioa=1, type="M_DP_NA_1"),
    )
    pm = PointMap("x.toml", sources, points)
    path = write_point_map(pm, tmp_path / "hostile.toml")
    text = path.read_text(encoding="utf-8")
    tomllib.loads(text)  # valid TOML
    assert "\x00" not in text
    assert "\x1b" not in text
    back = read_point_map(path)
    assert back.points == pm.points
    assert dict(back.sources) == dict(pm.sources)
    assert not (tmp_path / "hostile.toml.tmp").exists()


def test_connections_are_read_from_the_files_sources_tables(tmp_path: Path) -> None:
    from typing import get_args

    from opendso.telemetry.points import PROTOCOLS, Connection, ProtocolName

    path = tmp_path / "points.toml"
    path.write_text(GOOD)
    pm = read_point_map(path)
    assert all(isinstance(c, Connection) for c in pm.sources.values())
    assert pm.point("T1/p").source == "rtu-1"
    assert get_args(ProtocolName) == PROTOCOLS

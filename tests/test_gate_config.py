"""The safety gate's configuration file: read, checked against the grid, used by `opendso run`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.operations.switching import DeviceClass, GateConfig, read_gate_config

LBS = "MV3.101 Switch 13"
FEEDERS = ("MV3.101 node1 / MV3.101 Line 1", "MV3.101 node1 / MV3.101 Line 16")


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("simbench:1-MV-urban--0-sw")


def test_a_full_file_is_read(grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(
        f"""u_min_pu = 0.92
u_max_pu = 1.08
loading_max = 0.9
critical_switches = ["{LBS}"]
parallel_pairs = [["{FEEDERS[0]}", "{FEEDERS[1]}"]]
default_device = "disconnector"

[device_classes]
cb = "breaker"
"""
    )
    config = read_gate_config(path, grid)
    assert config == GateConfig(
        u_min_pu=0.92,
        u_max_pu=1.08,
        loading_max=0.9,
        critical_switches=frozenset({LBS}),
        parallel_pairs=frozenset({frozenset(FEEDERS)}),
        default_device=DeviceClass.DISCONNECTOR,
        device_classes={"CB": DeviceClass.BREAKER},
    )
    assert config.device_class("LBS") is DeviceClass.DISCONNECTOR
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert read_gate_config(empty, grid) == GateConfig()


def test_every_problem_of_a_bad_file_is_named(grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """u_min_pu = 1.2
u_max_pu = 1.1
loading_max = -1
critical_switches = ["ghost switch"]
parallel_pairs = [["only one"], ["a", "a"]]
default_device = "fuse"
colour = "red"

[device_classes]
CB = "sword"
"""
    )
    with pytest.raises(InputError) as info:
        read_gate_config(path, grid)
    text = str(info.value)
    for words in (
        "bad.toml",
        "unknown key 'colour'",
        "loading_max must be a positive number",
        "u_min_pu must be below u_max_pu",
        "critical switch 'ghost switch' is not a switch",
        "parallel_pairs entry 1 must be two names",
        "parallel_pairs entry 2 names 'a' twice",
        "default_device must be one of",
        "CB = 'sword'",
    ):
        assert words in text, (words, text)
    assert info.value.exit_code == 2
    (tmp_path / "broken.toml").write_text("u_min_pu = = 1")
    with pytest.raises(InputError, match=r"broken\.toml: not TOML"):
        read_gate_config(tmp_path / "broken.toml", grid)
    with pytest.raises(InputError, match=r"missing\.toml: cannot read"):
        read_gate_config(tmp_path / "missing.toml", grid)


def test_opendso_run_uses_the_file(grid_of: Callable[[str], Grid], tmp_path: Path) -> None:
    from opendso.runtime import ControlRoomProcess

    demo = grid_of("demo")
    critical = str(demo.switch_names[0])
    path = tmp_path / "gate.toml"
    path.write_text(f'critical_switches = ["{critical}"]\n')
    process = ControlRoomProcess(demo, tmp_path / "data", port=None, gate_config=path)
    try:
        assert process.app.state.switching.dispatcher.gate.config.critical_switches == frozenset({critical})
    finally:
        process.historian.close()
    path.write_text('critical_switches = ["nowhere"]\n')
    with pytest.raises(InputError, match="'nowhere' is not a switch"):
        ControlRoomProcess(demo, tmp_path / "data2", port=None, gate_config=path)

"""The safety gate's configuration file (TOML): limits, feeder pairs allowed to parallel, critical switches.

::

    u_min_pu = 0.9                   # post-switching voltage limits (p.u.)
    u_max_pu = 1.1
    loading_max = 1.0                # post-switching branch loading limit (1.0 = 100 %)
    disconnector_max_current_a = 1.0 # what a disconnector may make or break
    critical_switches = ["MV1.101 Switch 1"]          # need a second person's approval
    parallel_pairs = [["MV1.101 node1 / MV1.101 Line 1", "MV1.101 node1 / MV1.101 Line 5"]]
    default_device = "load_break"    # switches of kinds the table below does not name

    [device_classes]                 # switch kind in the model -> breaker | load_break | disconnector
    CB = "breaker"
    LBS = "load_break"
    DS = "disconnector"

Every key is optional (the :class:`~opendso.operations.switching.model.GateConfig` defaults
apply). :func:`read_gate_config` checks the file against the grid: an unknown key, a value of the
wrong type or range, a critical switch the grid lacks, or a pair that is not two names is one
:class:`~opendso.errors.InputError` naming the file and every problem.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.operations.switching.model import DeviceClass, GateConfig

__all__ = ["read_gate_config"]

_FLOATS = ("u_min_pu", "u_max_pu", "loading_max", "disconnector_max_current_a")
_KEYS = frozenset({*_FLOATS, "critical_switches", "parallel_pairs", "default_device", "device_classes"})


def read_gate_config(path: Path | str, grid: Grid) -> GateConfig:
    """Read the gate's configuration from a TOML file, checked against ``grid`` (see the module docstring)."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{where}: cannot read the gate configuration ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not TOML ({exc})") from exc
    problems: list[str] = [f"unknown key {key!r}" for key in data if key not in _KEYS]
    values: dict[str, Any] = {}
    for key in _FLOATS:
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                problems.append(f"{key} must be a positive number, got {value!r}")
            else:
                values[key] = float(value)
    if "u_min_pu" in values and "u_max_pu" in values and values["u_min_pu"] >= values["u_max_pu"]:
        problems.append("u_min_pu must be below u_max_pu")
    switches = set(grid.switch_names.tolist())
    critical = data.get("critical_switches", [])
    if not isinstance(critical, list) or not all(isinstance(c, str) for c in critical):
        problems.append("critical_switches must be a list of switch names")
    else:
        problems += [
            f"critical switch {c!r} is not a switch of grid {grid.name}" for c in critical if c not in switches
        ]
        values["critical_switches"] = frozenset(critical)
    pairs = data.get("parallel_pairs", [])
    good_pairs: set[frozenset[str]] = set()
    if not isinstance(pairs, list):
        problems.append("parallel_pairs must be a list of pairs of feeder (or busbar) names")
    else:
        for k, pair in enumerate(pairs, start=1):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) and n for n in pair)):
                problems.append(f"parallel_pairs entry {k} must be two names, got {pair!r}")
            elif pair[0] == pair[1]:
                problems.append(f"parallel_pairs entry {k} names {pair[0]!r} twice")
            else:
                good_pairs.add(frozenset(pair))
        values["parallel_pairs"] = frozenset(good_pairs)
    devices = {m.value: m for m in DeviceClass}
    if "default_device" in data:
        if data["default_device"] in devices:
            values["default_device"] = devices[data["default_device"]]
        else:
            problems.append(f"default_device must be one of {', '.join(devices)}, got {data['default_device']!r}")
    if "device_classes" in data:
        table = data["device_classes"]
        if not isinstance(table, dict):
            problems.append("device_classes must be a table of switch kind -> device class")
        else:
            bad = [f"{k} = {v!r}" for k, v in table.items() if v not in devices]
            if bad:
                problems.append(f"device_classes must map to one of {', '.join(devices)}: {', '.join(bad)}")
            else:
                values["device_classes"] = {str(k).strip().upper(): devices[v] for k, v in table.items()}
    if problems:
        raise InputError(f"{where}: " + "; ".join(problems))
    return GateConfig(**values)

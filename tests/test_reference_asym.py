"""Unbalanced power flow against pandapower's ``runpp_3ph`` on reference cases.

Every folder under ``tests/data/reference/power_flow_asym/`` with a ``params.json`` is a case:
a network from ``pandapower.networks`` (with optional transformer overrides), and an
``expected.json`` written by pandapower's ``runpp_3ph`` through ``generate_expected.py``. The test
imports the network with :func:`~opendso.grid.from_pandapower`, runs
power-grid-model's unbalanced power flow and compares the voltage magnitude of every phase of
every bus within the case's ``atol_u_pu``. A case whose ``params.json`` has ``xfail`` documents a
known modelling difference (strict: the test fails once the difference is gone, so the marker
gets removed).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from opendso.calc.powerflow import run_power_flow
from opendso.grid import from_pandapower

DATA = Path(__file__).parent / "data" / "reference" / "power_flow_asym"
CASES = sorted(p.parent for p in DATA.glob("*/params.json"))


def _params(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "params.json").read_text()))


def _case_param(folder: Path) -> Any:
    params = _params(folder)
    marks = [pytest.mark.xfail(strict=True, reason=params["xfail"])] if "xfail" in params else []
    return pytest.param(folder, id=folder.name, marks=marks)


def _build_net(params: dict[str, Any]) -> Any:
    import pandapower.networks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(pandapower.networks, params["network"])(*params.get("args", []))
    for column, value in params.get("trafo_overrides", {}).items():
        net.trafo[column] = value
    return net


@pytest.mark.parametrize("folder", [_case_param(f) for f in CASES])
def test_unbalanced_power_flow_matches_runpp_3ph(folder: Path) -> None:
    params = _params(folder)
    expected = json.loads((folder / "expected.json").read_text())["u_pu"]
    grid = from_pandapower(_build_net(params), name=folder.name)
    result = run_power_flow(grid, symmetric=False)
    assert result.converged, result.error
    names = [str(n) for n in grid.names_of("node")]
    assert sorted(names) == sorted(expected)
    reference = np.array([expected[n] for n in names])
    diff = np.abs(result.node_u_pu() - reference)
    worst = float(diff.max())
    bus, phase = np.unravel_index(int(diff.argmax()), diff.shape)
    assert worst <= params["atol_u_pu"], f"max |dU| = {worst:.3e} p.u. at bus {names[bus]} phase {'abc'[phase]}"

"""Short-circuit currents (IEC 60909) against pandapower's ``calc_sc``, case folder by case folder.

Every folder under ``tests/data/reference/short_circuit/`` with a ``params.json`` is a case;
each study in it (fault type, max/min, low-voltage tolerance) is one test. The expected
currents were produced by pandapower through ``generate.py`` in the same parent folder; the
folder's README says where the grid comes from and how both tools were set up.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from opendso.calc.shortcircuit import run_short_circuit
from opendso.grid import from_pandapower
from opendso.grid.model import Grid

ROOT = Path(__file__).parent / "data" / "reference" / "short_circuit"


def _generator() -> ModuleType:
    """The generator script, whose network loader both tools share."""
    spec = importlib.util.spec_from_file_location("short_circuit_generate", ROOT / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def _studies() -> list[Any]:
    params = []
    for case_dir in GENERATOR.case_dirs():
        for k, study in enumerate(GENERATOR.load_params(case_dir)["studies"]):
            label = f"{case_dir.name}-{study['fault_type']}-{study['case']}-lv{study['lv_tolerance_percent']}"
            params.append(pytest.param(case_dir, k, id=label))
    return params


@cache
def _case_grid(case_dir: Path) -> Grid:
    net = GENERATOR.load_case_net(GENERATOR.load_params(case_dir))
    return from_pandapower(net, name=case_dir.name)


def test_cases_are_found() -> None:
    names = {d.name for d in GENERATOR.case_dirs()}
    assert {"simbench_mv_urban", "simbench_lv_rural1", "ieee_european_lv"} <= names
    for case_dir in GENERATOR.case_dirs():
        assert (case_dir / "expected.json").is_file()
        assert (case_dir / "README.md").is_file()


@pytest.mark.parametrize(("case_dir", "index"), _studies())
def test_short_circuit_matches_pandapower(case_dir: Path, index: int) -> None:
    params = GENERATOR.load_params(case_dir)
    study = params["studies"][index]
    expected_study = json.loads((case_dir / "expected.json").read_text())["studies"][index]
    for key in ("fault_type", "case", "lv_tolerance_percent"):
        assert expected_study[key] == study[key], "expected.json is stale: run generate.py"

    grid = _case_grid(case_dir)
    result = run_short_circuit(
        grid,
        fault_type=study["fault_type"],
        case=study["case"],
        lv_tolerance_percent=study["lv_tolerance_percent"],
        line_end_temperature_c=params["line_end_temperature_c"],
    )
    ours = result.ik_ka_by_name()
    energized = dict(zip(result.node_names, result.energized.tolist(), strict=True))
    expected: dict[str, float | None] = expected_study["ik_ka"]
    assert set(ours) == set(expected)

    names = sorted(n for n, v in expected.items() if v is not None)
    dead = sorted(n for n, v in expected.items() if v is None)
    assert not any(energized[n] for n in dead), "nodes pandapower finds unsupplied must be reported de-energised"
    assert all(energized[n] for n in names)
    got = np.array([ours[n] for n in names])
    want = np.array([expected[n] for n in names], dtype=float)
    np.testing.assert_allclose(got, want, rtol=params["rtol"], atol=params["atol_ka"])

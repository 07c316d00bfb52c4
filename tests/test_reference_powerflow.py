"""Balanced power flow against pandapower, one case per folder under data/reference/power_flow/.

Each folder holds ``params.json`` (source, tolerances), ``expected.json`` (pandapower's results,
written by ``generate.py``) and a README naming where the case comes from. Elements are matched
by their index in the source's pandapower tables, which the importer keeps.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from opendso.calc.powerflow import run_power_flow
from opendso.grid.sources import load_grid

CASES = Path(__file__).parent / "data" / "reference" / "power_flow"


def _cases() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if (p / "params.json").is_file())


def _rows(source_index: np.ndarray, expected_index: list[int]) -> np.ndarray:
    order = np.argsort(source_index)
    pos = np.searchsorted(source_index, expected_index, sorter=order)
    rows = order[pos]
    assert np.array_equal(source_index[rows], expected_index)
    return rows


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.name)
def test_power_flow_matches_pandapower(case: Path) -> None:
    params = json.loads((case / "params.json").read_text())
    expected = json.loads((case / "expected.json").read_text())
    source = params["source"]
    scheme, _, arg = source.partition(":")
    if scheme == "pandapower":
        source = f"pandapower:{case / arg}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cwd = os.getcwd()
        grid = load_grid(source)
        assert os.getcwd() == cwd
    result = run_power_flow(grid, symmetric=params["symmetric"])
    assert result.converged, result.error

    tol_u = params["tolerance"]["u_pu"]
    tol_loading = params["tolerance"]["loading"]
    rows = _rows(grid.extra["node"]["source_index"], expected["bus"]["index"])
    u = result.output["node"]["u_pu"][rows]
    u_ref = np.array(expected["bus"]["vm_pu"], dtype=float)
    energised = np.isfinite(u_ref)
    assert np.max(np.abs(u[energised] - u_ref[energised])) <= tol_u
    # de-energised buses are NaN in pandapower and zero in power-grid-model
    assert np.all(u[~energised] == 0)

    for table, component in (("line", "line"), ("trafo", "transformer")):
        if not expected[table]["index"]:
            continue
        rows = _rows(grid.extra[component]["source_index"], expected[table]["index"])
        loading = result.output[component]["loading"][rows]
        ref = np.array(expected[table]["loading"], dtype=float)
        ok = np.isfinite(ref)
        assert np.max(np.abs(loading[ok] - ref[ok])) <= tol_loading, table


def test_every_case_is_documented() -> None:
    for case in _cases():
        assert (case / "README.md").is_file(), case.name
        assert (case / "expected.json").is_file(), case.name
    assert len(_cases()) >= 6

"""The TSO-DSO interface on SimBench 1-MV-rural: grid-supply points, day-ahead exchange, flexibility, requests.

References, independent of the code under test:

- the grid-supply point against pandapower's own network (the transformers at the external grid's
  busbar, found by networkx over pandapower's graph without transformers);
- the scheduled exchange against a pandapower power flow of the same interval (the grid exported
  with :func:`to_pandapower`, the loads and generators at the forecast median of that interval):
  the P and Q into the HV sides of the GSP transformers agree within 1e-4 MW / Mvar;
- the flexibility offer and an accepted TSO request against pandapower with the activation
  applied at the DER's nodes: no line or transformer above 100 % (+1e-4) nor a node outside
  0.9..1.1 p.u. (+-1e-5) that the interval's state does not already have; the offer plus one step
  of the check's resolution does violate (the limit is real, not a margin).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandapower as pp
import pandapower.topology as top
import pytest

from opendso.der import AssetKind, DerAsset, DerRegistry
from opendso.errors import InputError
from opendso.grid.io.pandapower_writer import to_pandapower
from opendso.grid.model import Grid
from opendso.grid.sources import load_grid
from opendso.markets.network_check import BaseInjections
from opendso.markets.tso import (
    CSV_COLUMNS,
    Direction,
    RequestStatus,
    TsoInterface,
    TsoReport,
    TsoRequest,
    grid_supply_points,
)
from opendso.store import Historian
from opendso.store.der import DerStore

CODE = "1-MV-rural--0-sw"
ISSUED = datetime(2016, 3, 1, tzinfo=UTC)
T0 = datetime(2026, 1, 5, tzinfo=UTC)
#: The far end of a rural feeder (22 km of line from the source) and a node near the busbar.
FAR = "MV1.101 Bus 68"
NEAR = "MV1.101 Bus 4"
BATTERY_KW = 10_000.0
EXCHANGE_TOL_MW = 1e-4
LOADING_TOL = 1e-4
U_TOL = 1e-5


@pytest.fixture(scope="module")
def grid() -> Grid:
    return load_grid(f"simbench:{CODE}")


@pytest.fixture(scope="module")
def registry(grid: Grid, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DerRegistry]:
    historian = Historian.open(f"sqlite:///{tmp_path_factory.mktemp('tso') / 'der.sqlite'}")
    reg = DerRegistry(DerStore(historian.engine), grid, clock=lambda: T0)
    reg.add_asset(
        DerAsset(
            "BAT1",
            "Battery far",
            AssetKind.BATTERY,
            FAR,
            "Owner",
            export_kw=BATTERY_KW,
            import_kw=BATTERY_KW,
            storage_kwh=20_000,
        ),
        actor="t",
    )
    reg.add_asset(DerAsset("PV1", "Solar park", AssetKind.PV, NEAR, "Owner", export_kw=2_000), actor="t")
    reg.add_asset(DerAsset("FL1", "Cold store", AssetKind.FLEXIBLE_LOAD, NEAR, "Owner", import_kw=1_000), actor="t")
    yield reg
    historian.close()


@pytest.fixture(scope="module")
def tso(grid: Grid, registry: DerRegistry) -> TsoInterface:
    return TsoInterface(grid, registry, resolution=40)


@pytest.fixture(scope="module")
def report(tso: TsoInterface) -> TsoReport:
    return tso.day_ahead(ISSUED, steps=96)


# -- pandapower reference -------------------------------------------------------------------------------------


_EXPORTED: dict[str, Any] = {}


def _exported(grid: Grid) -> Any:
    """The grid exported to pandapower once per test module (copied before each use)."""
    if grid.name not in _EXPORTED:
        _EXPORTED[grid.name] = to_pandapower(grid)
    return _EXPORTED[grid.name]


def _net_at(grid: Grid, base: BaseInjections, row: int, extra_w: dict[str, float] | None = None) -> Any:
    """The exported grid with the loads and generators of ``base`` row ``row`` and extra consumption (W) at nodes."""
    net = copy.deepcopy(_exported(grid))
    loads, gens = grid.component("sym_load")["id"], grid.component("sym_gen")["id"]
    net.load.loc[loads, "p_mw"] = base.load_p[row] / 1e6
    net.load.loc[loads, "q_mvar"] = base.load_q[row] / 1e6
    net.sgen.loc[gens, "p_mw"] = base.gen_p[row] / 1e6
    net.sgen.loc[gens, "q_mvar"] = base.gen_q[row] / 1e6
    node_id = dict(zip(grid.names_of("node").tolist(), grid.component("node")["id"].tolist(), strict=True))
    for node, w in (extra_w or {}).items():
        pp.create_load(net, node_id[node], p_mw=w / 1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-10, trafo_model="pi", trafo_loading="power", numba=False, max_iteration=50)
    return net


def _figures(net: Any) -> dict[str, np.ndarray]:
    return {
        "line": net.res_line["loading_percent"].to_numpy() / 100,
        "trafo": net.res_trafo["loading_percent"].to_numpy() / 100,
        "vm": net.res_bus["vm_pu"].to_numpy(),
    }


def _new_violations(base: dict[str, np.ndarray], case: dict[str, np.ndarray]) -> list[str]:
    found = []
    for key in ("line", "trafo"):
        cap = np.maximum(1.0, base[key]) + LOADING_TOL
        found += [f"{key} {k} at {v:.4f}" for k, v in enumerate(case[key]) if v > cap[k]]
    hi = np.maximum(1.1, np.nan_to_num(base["vm"], nan=1.0)) + U_TOL
    lo = np.minimum(0.9, np.nan_to_num(base["vm"], nan=1.0)) - U_TOL
    vm = case["vm"]
    found += [f"bus {k} at {v:.4f} p.u." for k, v in enumerate(vm) if np.isfinite(v) and (v > hi[k] or v < lo[k])]
    return found


# -- grid-supply points ---------------------------------------------------------------------------------------


def test_grid_supply_point_is_the_hv_mv_transformer_pair(grid: Grid) -> None:
    net = _exported(grid)
    source_bus = int(net.ext_grid.bus.iloc[0])
    upstream = nx.node_connected_component(top.create_nxgraph(net, include_trafos=False), source_bus)
    expected = sorted(
        str(n)
        for n, hv, lv in zip(net.trafo.name, net.trafo.hv_bus, net.trafo.lv_bus, strict=True)
        if (hv in upstream) != (lv in upstream)
    )
    (gsp,) = grid_supply_points(grid)
    assert sorted(gsp.transformers) == expected == ["HV1-MV1.101-Trafo1", "HV1-MV1.101-Trafo2"]
    assert gsp.source_node == str(net.bus.name[source_bus])
    assert FAR in gsp.nodes_behind
    assert NEAR in gsp.nodes_behind
    assert gsp.source_node not in gsp.nodes_behind
    assert len(gsp.nodes_behind) == len(nx.node_connected_component(top.create_nxgraph(net), source_bus) - upstream)


# -- the scheduled exchange -----------------------------------------------------------------------------------


def test_exchange_equals_pandapower(grid: Grid, report: TsoReport) -> None:
    (schedule,) = report.schedules
    assert len(schedule.times) == 96
    assert schedule.times[0] == ISSUED
    assert schedule.times[1] - schedule.times[0] == timedelta(minutes=15)
    trafos = list(schedule.gsp.transformers)
    for row in (0, 40, 95):
        net = _net_at(grid, report.base, row)
        hv = net.res_trafo.loc[net.trafo.name.isin(trafos)]
        assert schedule.p_mw[row] == pytest.approx(float(hv.p_hv_mw.sum()), abs=EXCHANGE_TOL_MW)
        assert schedule.q_mvar[row] == pytest.approx(float(hv.q_hv_mvar.sum()), abs=EXCHANGE_TOL_MW)
    assert np.all(schedule.p_low_mw <= schedule.p_mw + 1e-12)
    assert np.all(schedule.p_mw <= schedule.p_high_mw + 1e-12)
    assert np.all(schedule.q_low_mvar <= schedule.q_high_mvar + 1e-12)
    assert float(np.mean(schedule.p_high_mw - schedule.p_low_mw)) > 0.1  # a real band, not a line


# -- flexibility -------------------------------------------------------------------------------------------------


def test_flexibility_is_limited_by_the_network(grid: Grid, tso: TsoInterface, report: TsoReport) -> None:
    (schedule,) = report.schedules
    gross_up = (BATTERY_KW + 1_000) / 1e3  # battery discharge + the flexible load off
    gross_down = (BATTERY_KW + 2_000) / 1e3  # battery charge + PV curtailed
    assert np.allclose(schedule.up_gross_mw, gross_up)
    assert np.allclose(schedule.down_gross_mw, gross_down)
    assert np.all(schedule.up_mw <= gross_up + 1e-12)
    limited = [k for k, e in enumerate(schedule.up_limited_by) if e is not None]
    assert limited, "a 10 MW battery 22 km out must be limited by the feeder"
    step_mw = gross_up / tso.resolution
    for row in (limited[0],):
        base = _figures(_net_at(grid, report.base, row))
        offered = _figures(
            _net_at(grid, report.base, row, tso.activation_w(schedule.gsp.name, Direction.UP, schedule.up_mw[row]))
        )
        assert _new_violations(base, offered) == []
        beyond = tso.activation_w(schedule.gsp.name, Direction.UP, schedule.up_mw[row] + step_mw)
        assert _new_violations(base, _figures(_net_at(grid, report.base, row, beyond)))


def test_reserve_is_taken_off_the_offer(tso: TsoInterface, report: TsoReport) -> None:
    reserve = np.linspace(0.0, 3.0, 8)
    reduced = tso.day_ahead(ISSUED, steps=8, reserve_up_mw=reserve, reserve_down_mw=[0.5] * 8)
    (schedule,) = reduced.schedules
    gross = schedule.up_gross_mw
    assert np.all(schedule.up_mw <= gross - reserve + 1e-9)
    assert np.all(schedule.down_mw <= schedule.down_gross_mw - 0.5 + 1e-9)
    assert np.array_equal(schedule.reserve_up_mw, reserve)
    # where the network does not bind, the whole remainder is offered
    free = [k for k, e in enumerate(schedule.up_limited_by) if e is None]
    for k in free:
        assert schedule.up_mw[k] == pytest.approx(gross[k] - reserve[k], abs=1e-9)


# -- TSO requests ------------------------------------------------------------------------------------------------


def test_accepted_request_causes_no_violation(grid: Grid, tso: TsoInterface, report: TsoReport) -> None:
    (schedule,) = report.schedules
    rows = [10, 11]
    mw = 0.9 * float(min(schedule.up_mw[rows]))
    answer = tso.check_request(report, TsoRequest(schedule.gsp.name, tuple(schedule.times[k] for k in rows), "up", mw))
    assert answer.status is RequestStatus.ACCEPTED
    assert answer.accepted_mw == pytest.approx((mw,) * 2)
    assert answer.reason is None
    for row in rows:
        base = _figures(_net_at(grid, report.base, row))
        after = _figures(_net_at(grid, report.base, row, tso.activation_w(schedule.gsp.name, Direction.UP, mw)))
        assert _new_violations(base, after) == []


def test_oversized_request_is_refused_naming_the_element(tso: TsoInterface, report: TsoReport) -> None:
    (schedule,) = report.schedules
    row = next(k for k, e in enumerate(schedule.up_limited_by) if e is not None)
    element = schedule.up_limited_by[row]
    assert element is not None
    big = float(schedule.up_gross_mw[row])  # all of the DER: more than the feeder can take
    whole = tso.check_request(
        report, TsoRequest(schedule.gsp.name, (schedule.times[row],), "up", big, all_or_none=True)
    )
    assert whole.status is RequestStatus.REFUSED
    assert whole.accepted_mw == (0.0,)
    assert whole.reason is not None
    assert element in whole.reason
    part = tso.check_request(report, TsoRequest(schedule.gsp.name, (schedule.times[row],), "up", big))
    assert part.status is RequestStatus.PARTIAL
    assert part.accepted_mw[0] == pytest.approx(float(schedule.up_mw[row]), abs=1e-9)
    assert part.reasons[0] is not None
    assert element in part.reasons[0]
    assert part.to_dict()["intervals"][0]["accepted_mw"] == part.accepted_mw[0]


# -- export --------------------------------------------------------------------------------------------------------


def test_export_as_csv_json_and_dict(report: TsoReport, tmp_path: Path) -> None:
    report.write_csv(tmp_path / "tso.csv")
    report.write_json(tmp_path / "tso.json")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "tso.csv").read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 96
    (schedule,) = report.schedules
    assert float(rows[5]["p_mw"]) == pytest.approx(float(schedule.p_mw[5]), rel=1e-12)
    assert rows[5]["interval_start"] == "2016-03-01T01:15:00Z"
    body = json.loads((tmp_path / "tso.json").read_text())
    assert body == json.loads(json.dumps(report.to_dict()))
    assert body["sign"] == "import positive"
    (gsp,) = body["gsps"]
    assert gsp["transformers"] == list(schedule.gsp.transformers)
    assert gsp["intervals"][5]["up_mw"] == float(schedule.up_mw[5])


# -- bad input -------------------------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_what_and_where(tso: TsoInterface, report: TsoReport) -> None:
    (schedule,) = report.schedules
    name, first = schedule.gsp.name, schedule.times[0]
    with pytest.raises(InputError, match="timezone-aware"):
        tso.day_ahead(datetime(2016, 3, 1), steps=4)  # the naive time under test
    with pytest.raises(InputError, match="band"):
        tso.day_ahead(ISSUED, steps=4, band=(0.6, 0.9))
    with pytest.raises(InputError, match="reserve_up_mw must be 4 finite values >= 0"):
        tso.day_ahead(ISSUED, steps=4, reserve_up_mw=[1.0, -1.0, 0.0, 0.0])
    with pytest.raises(InputError, match="reserve_down_mw must be 4"):
        tso.day_ahead(ISSUED, steps=4, reserve_down_mw=[1.0])
    with pytest.raises(InputError, match="no grid-supply point 'GSP 9'"):
        tso.check_request(report, TsoRequest("GSP 9", (first,), "up", 1.0))
    with pytest.raises(InputError, match="is not in the day-ahead report"):
        tso.check_request(report, TsoRequest(name, (first - timedelta(days=1),), "up", 1.0))
    with pytest.raises(InputError, match="mw must be a finite number > 0"):
        TsoRequest(name, (first,), "up", 0.0)
    with pytest.raises(InputError, match="mw must be a finite number > 0"):
        TsoRequest(name, (first,), "up", math.nan)
    with pytest.raises(InputError, match="direction must be"):
        TsoRequest(name, (first,), "sideways", 1.0)
    with pytest.raises(InputError, match="timezone-aware"):
        TsoRequest(name, (datetime(2016, 3, 1),), "up", 1.0)  # the naive time under test
    with pytest.raises(InputError, match="no intervals"):
        TsoRequest(name, (), "down", 1.0)
    with pytest.raises(InputError, match="resolution"):
        TsoInterface(tso.grid, tso.registry, resolution=0)

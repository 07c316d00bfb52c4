"""Time-series hosting capacity: against a brute-force search, on Dask with 1 and 2 workers, the CLI contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geojson
import numpy as np
import pandapower as pp
import pytest
from power_grid_model import CalculationMethod, LoadGenType, PowerGridModel, initialize_array
from power_grid_model.errors import PowerGridError

from opendso.calc.hc_dask import node_chunks, run_hosting_capacity
from opendso.calc.hosting_capacity import ACCURACY_FRACTION, ACCURACY_MW, hosting_capacity
from opendso.calc.timeseries import ViolationLimits
from opendso.cli import main
from opendso.errors import InputError
from opendso.grid import Grid, load_grid

LV = "simbench:1-LV-rural1--0-sw"
STEPS = 8


@pytest.fixture(scope="module")
def grid() -> Grid:
    return load_grid(LV)


def _model_with_extra(grid: Grid, node_id: int, p_w: float) -> PowerGridModel:
    """The grid with an extra sym_gen (p_w < 0) or sym_load at the node: independent of the study's probes."""
    data = {c: a.copy() for c, a in grid.pgm_input().items()}
    component = "sym_gen" if p_w < 0 else "sym_load"
    extra = initialize_array("input", component, 1)
    extra["id"] = grid.max_id + 1
    extra["node"] = node_id
    extra["status"] = 1
    extra["type"] = LoadGenType.const_power
    extra["p_specified"] = abs(p_w)
    extra["q_specified"] = 0.0
    data[component] = np.concatenate([data[component], extra]) if component in data else extra
    return PowerGridModel(data, system_frequency=grid.frequency_hz)


def _violations_at(grid: Grid, model: PowerGridModel, step: int, limits: ViolationLimits) -> set[tuple[str, str]]:
    """One Newton-Raphson power flow at one profile step: the (kind, element name) pairs beyond the limits."""
    assert grid.profiles is not None
    update: dict[str, Any] = {}
    for a in grid.profiles.assignments:
        array = update.setdefault(a.component, initialize_array("update", a.component, a.ids.size))
        array["id"] = a.ids
        array[a.attribute] = a.evaluate(grid.profiles.values[step : step + 1])[0]
    model.update(update_data=update)
    try:
        out = model.calculate_power_flow(calculation_method=CalculationMethod.newton_raphson, error_tolerance=1e-10)
    except PowerGridError:  # no solution: voltage collapse, infeasible as in the study
        return {("voltage", "no solution")}
    found: set[tuple[str, str]] = set()
    node = out["node"]
    bad = (node["energized"] == 1) & ((node["u_pu"] < limits.u_min_pu) | (node["u_pu"] > limits.u_max_pu))
    found.update(("voltage", str(n)) for n in grid.names_of("node")[bad])
    for branch in ("line", "transformer"):
        if branch in out:
            over = out[branch]["loading"] > limits.loading_max
            found.update(("thermal", str(n)) for n in grid.names_of(branch)[over])
    return found


def _feasible_brute(grid: Grid, node_id: int, p_w: float, steps: int, limits: ViolationLimits) -> bool:
    """Independent check: one Newton-Raphson power flow per step with the extra power at the node."""
    model = _model_with_extra(grid, node_id, p_w)
    return all(not _violations_at(grid, model, step, limits) for step in range(steps))


def _brute_force(grid: Grid, node_id: int, sign: float, steps: int, limits: ViolationLimits) -> float:
    """Bisection on the size (MW) to 0.05 % or 1 kW with single power flows at every step."""
    if not _feasible_brute(grid, node_id, 0.0, steps, limits):
        return 0.0
    lo, hi = 0.0, 50.0
    assert not _feasible_brute(grid, node_id, sign * hi * 1e6, steps, limits)
    while hi - lo > max(5e-4 * lo, 1e-3):
        mid = 0.5 * (lo + hi)
        if _feasible_brute(grid, node_id, sign * mid * 1e6, steps, limits):
            lo = mid
        else:
            hi = mid
    return lo


def test_agrees_with_brute_force_within_the_stated_accuracy(grid: Grid) -> None:
    names = grid.names_of("node")
    studied = [str(names[k]) for k in (1, 7, 13)]
    limits = ViolationLimits(u_min_pu=0.95, u_max_pu=1.04, loading_max=0.6)
    result = hosting_capacity(grid, nodes=studied, steps=STEPS, limits=limits)
    assert [n.node for n in result.nodes] == studied
    kinds = set()
    for record in result.nodes:
        for sign, got, limit in (
            (-1.0, record.generation_mw, record.generation_limit),
            (1.0, record.load_mw, record.load_limit),
        ):
            expected = _brute_force(grid, record.node_id, sign, STEPS, limits)
            tolerance = max(ACCURACY_FRACTION * expected, ACCURACY_MW) + 1e-3
            assert abs(got - expected) <= tolerance, (record.node, sign, got, expected)
            # what is reported is feasible (a lower bound within the accuracy)
            assert _feasible_brute(grid, record.node_id, sign * got * 1e6, STEPS, limits)
            assert limit is not None
            assert 0 <= limit.step < STEPS
            # the named limit is violated at the named step one accuracy step above the answer
            above = got + max(ACCURACY_FRACTION * got, ACCURACY_MW)
            seen = _violations_at(grid, _model_with_extra(grid, record.node_id, sign * above * 1e6), limit.step, limits)
            assert (limit.kind, limit.element) in seen, (record.node, limit, seen)
            kinds.add(limit.kind)
    assert kinds <= {"voltage", "thermal"}


def test_every_energised_node_but_the_source_is_studied(grid: Grid) -> None:
    result = hosting_capacity(grid, steps=4)
    source_nodes = set(grid.component("source")["node"].tolist())
    ids = {n.node_id for n in result.nodes}
    assert ids
    assert not ids & source_nodes
    assert len(ids) == grid.count("node") - len(source_nodes)


def test_dask_one_and_two_workers_give_the_same_answer(grid: Grid) -> None:
    names = [str(n) for n in grid.names_of("node")[1:9]]
    one = run_hosting_capacity(grid, nodes=names, steps=STEPS, workers=1, processes=False, chunk_nodes=2)
    seen: list[tuple[int, int]] = []
    two = run_hosting_capacity(
        grid,
        nodes=names,
        steps=STEPS,
        workers=2,
        processes=False,
        chunk_nodes=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    local = hosting_capacity(grid, nodes=names, steps=STEPS, chunk_nodes=2)
    assert one.to_dict() == two.to_dict() == local.to_dict()
    assert seen[-1] == (len(names), len(names))
    assert [n.node for n in two.nodes] == names
    chunks = node_chunks(grid, [n.node_id for n in one.nodes], 2)
    assert sum(c.size for c in chunks) == len(names)
    assert max(c.size for c in chunks) <= 2


def test_cli_json_contract(capsys: pytest.CaptureFixture[str], grid: Grid) -> None:
    node = str(grid.names_of("node")[3])
    status = main(["hosting-capacity", LV, "--node", node, "--steps", "4", "--workers", "1", "--quiet", "--json"])
    out, _ = capsys.readouterr()
    assert status == 0
    payload = json.loads(out)
    assert set(payload) == {"grid", "steps", "nodes"}
    assert payload["grid"] == LV
    assert payload["steps"] == 4
    (record,) = payload["nodes"]
    assert set(record) == {"node", "generation_mw", "load_mw", "generation_limit", "load_limit"}
    assert record["node"] == node
    assert record["generation_mw"] > 0
    assert record["load_mw"] > 0
    for key in ("generation_limit", "load_limit"):
        assert set(record[key]) == {"kind", "element", "step"}
        assert record[key]["kind"] in {"voltage", "thermal"}
        assert 0 <= record[key]["step"] < 4


def test_cli_margin_filter_gives_the_exact_answer_on_a_small_grid(capsys: pytest.CaptureFixture[str]) -> None:
    """``--margin-filter`` skips steps, not answers: the same JSON as the exact study here."""
    argv = ["hosting-capacity", LV, "--steps", "96", "--workers", "1", "--quiet", "--json"]
    assert main(argv) == 0
    exact = json.loads(capsys.readouterr().out)
    assert main([*argv, "--margin-filter", "0.02"]) == 0
    assert json.loads(capsys.readouterr().out) == exact


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--node", "no such bus"], "no such bus"),
        (["--steps", "0"], "--steps"),
        (["--u-min", "1.2"], "--u-min"),
        (["--scheduler", "http://example"], "--scheduler"),
        (["--workers", "0"], "--workers"),
        (["--margin-filter", "-1"], "margin filter"),
        (["--margin-filter", "nan"], "margin filter"),
    ],
)
def test_cli_bad_input_exits_2_naming_it(capsys: pytest.CaptureFixture[str], argv: list[str], named: str) -> None:
    status = main(["hosting-capacity", LV, *argv, "--quiet", "--json"])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert named in err


def test_source_node_is_refused(grid: Grid) -> None:
    source_node = int(grid.component("source")["node"][0])
    name = str(grid.names_of("node")[grid.node_positions([source_node])[0]])
    with pytest.raises(InputError, match="source"):
        hosting_capacity(grid, nodes=[name], steps=2)


def test_grid_without_profiles_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    net = pp.create_empty_network()
    b = pp.create_buses(net, 2, vn_kv=10.0, name=["src", "n1"])
    pp.create_ext_grid(net, b[0], vm_pu=1.0, name="grid")
    pp.create_line_from_parameters(net, b[0], b[1], 1.0, 0.1, 0.1, 10.0, 0.3, name="l1")
    pp.create_load(net, b[1], p_mw=0.5, name="ld")
    path = tmp_path / "net.json"
    pp.to_json(net, str(path))
    source = f"pandapower:{path}"
    status = main(["hosting-capacity", source, "--quiet", "--json"])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert "no time profiles" in err


def test_runs_on_a_scheduler_given_by_address(grid: Grid) -> None:
    from dask.distributed import LocalCluster

    names = [str(n) for n in grid.names_of("node")[2:4]]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote = run_hosting_capacity(grid, nodes=names, steps=4, scheduler=cluster.scheduler_address)
        assert cluster.scheduler_address.startswith("inproc://")
    local = hosting_capacity(grid, nodes=names, steps=4)
    assert remote.to_dict() == local.to_dict()


def _check_feature_collection(payload: dict[str, Any], nodes: list[str]) -> None:
    assert payload["type"] == "FeatureCollection"
    assert [f["properties"]["node"] for f in payload["features"]] == nodes
    for feature in payload["features"]:
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "Point"
        x, y = feature["geometry"]["coordinates"]
        assert np.isfinite([x, y]).all()
        props = feature["properties"]
        assert {"node", "generation_mw", "load_mw", "generation_limit", "load_limit", "steps"} <= set(props)


def test_geojson_export_of_a_geographic_grid(capsys: pytest.CaptureFixture[str], grid: Grid, tmp_path: Path) -> None:
    nodes = [str(grid.names_of("node")[3]), str(grid.names_of("node")[7])]
    path = tmp_path / "hc.geojson"
    argv = ["hosting-capacity", LV, "--node", nodes[0], "--node", nodes[1], "--steps", "4", "--workers", "1"]
    assert main([*argv, "--quiet", "--json", "--geojson", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    payload = json.loads(path.read_text())
    _check_feature_collection(payload, nodes)
    assert payload["geographic"] is True
    rows = [int(np.flatnonzero(grid.names_of("node") == n)[0]) for n in nodes]
    for feature, row, record in zip(payload["features"], rows, printed["nodes"], strict=True):
        lon, lat = feature["geometry"]["coordinates"]
        # RFC 7946 section 3.1.1: [longitude, latitude]; SimBench's rural LV grid lies in northern Germany
        assert (lon, lat) == pytest.approx(tuple(grid.node_xy[row]))
        assert 5 < lon < 16
        assert 47 < lat < 56
        assert "coordinates" not in feature["properties"]
        assert feature["properties"]["generation_mw"] == record["generation_mw"]
    parsed = geojson.loads(path.read_text())
    assert parsed.is_valid, parsed.errors()


def test_geojson_of_a_grid_without_geography_is_schematic(grid: Grid) -> None:
    from dataclasses import replace

    from opendso.calc.hosting_capacity import hosting_geojson

    flat = replace(grid, node_xy=np.full((grid.count("node"), 2), np.nan))
    nodes = [str(grid.names_of("node")[3])]
    result = hosting_capacity(flat, nodes=nodes, steps=2)
    payload = hosting_geojson(flat, result)
    _check_feature_collection(payload, nodes)
    assert payload["geographic"] is False
    assert payload["features"][0]["properties"]["coordinates"] == "schematic"

"""Export of an OpenDSO :class:`~opendso.grid.model.Grid` to a pandapower network.

Each power-grid-model array becomes one pandapower table, built with pandapower's vectorised
``create_*s`` functions (one call per table, not per element). Element indices in pandapower
are the power-grid-model ids, so results can be matched element by element; names are the
source names. The mapping follows pandapower's power-flow model so that ``pandapower.runpp``
on the exported network solves the same case as power-grid-model:

- lines are 1 km long with the totals as per-km values (``g_us_per_km`` from ``tan1``);
- transformers keep ratings and losses; the phase shift is ``clock * 30`` degrees and the
  vector group is spelled from the winding types and the clock; the tap changer is a
  ``"Ratio"`` changer whose direction follows power-grid-model's (a ``tap_max`` below
  ``tap_min`` means the voltage falls as the tap rises: a negative ``tap_step_percent``);
- links and bus-bus switches become bus-bus switches; branch switches come from
  ``grid.switches``, and a branch end that is open without a switch gets an open switch;
- sources become external grids (stiff in pandapower's power flow, as OpenDSO's importer makes
  them); the short-circuit data come from ``grid.extra["source"]`` when present, else from
  ``sk`` and ``rx_ratio``. A source with a finite ``sk`` has an internal impedance in
  power-grid-model that pandapower's ext_grid does not model in power flow;
- loads become loads, constant-current and constant-impedance ones as 100 % ``const_i`` /
  ``const_z`` loads; loads of kind ``storage`` become storage units;
- generators become static generators, those with an active voltage regulator become
  voltage-controlled ``gen`` with the regulator's ``u_ref``; a generator of constant-current or
  constant-impedance type becomes a load with negative power (pandapower's sgen is constant PQ);
- shunts, unbalanced loads and unbalanced generators map one to one.

Two pandapower behaviours to know when using the export as a reference: ``runpp`` places the
transformer magnetising admittance in a T by default, power-grid-model in a pi
(``trafo_model="pi"`` makes them agree); and pandapower 3.5 averages the ZIP percentages of all
loads on one bus without weighting them by power and applies them to the bus's whole injection
(``build_bus._calc_loads_and_add_on_ppc``), so a voltage-dependent load sharing a bus with other
loads or generators solves differently there than in power-grid-model.

Not exported: ``asym_line`` and ``generic_branch`` (an :class:`~opendso.errors.InputError`),
transformer tap regulators (pandapower would need controllers; skipped with a log record),
tap-dependent impedances and grounding impedances of transformers, and sensors.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from power_grid_model import LoadGenType, WindingType

from opendso.errors import InputError
from opendso.grid.io.atomic import write_atomically
from opendso.grid.model import Grid

log = logging.getLogger(__name__)

_WINDING_LETTERS = {
    int(WindingType.wye): "Y",
    int(WindingType.wye_n): "YN",
    int(WindingType.delta): "D",
    int(WindingType.zigzag): "Z",
    int(WindingType.zigzag_n): "ZN",
}
_INT8_NA = -128
_UNSUPPORTED = ("asym_line", "generic_branch")


def to_pandapower(grid: Grid) -> Any:
    """Return a pandapower network (``pandapowerNet``) equivalent to the grid in power flow.

    Raises :class:`~opendso.errors.InputError` for components pandapower cannot represent
    (``asym_line``, ``generic_branch``, voltage regulation of loads) and for switches that refer
    to elements the grid does not have.
    """
    import pandapower as pp

    for component in _UNSUPPORTED:
        if grid.count(component):
            raise InputError(f"grid {grid.name}: component {component} cannot be exported to pandapower")
    if grid.count("transformer_tap_regulator"):
        log.info(
            "event=pandapower_export_skip component=transformer_tap_regulator count=%d",
            grid.count("transformer_tap_regulator"),
        )

    net = pp.create_empty_network(name=grid.name, f_hz=grid.frequency_hz)
    _buses(net, grid)
    _lines(net, grid)
    _transformers(net, grid)
    _three_winding(net, grid)
    _switches(net, grid)
    _sources(net, grid)
    _loads(net, grid)
    _generators(net, grid)
    _shunts(net, grid)
    _unbalanced(net, grid)
    return net


def write_pandapower_json(grid: Grid, path: Path) -> None:
    """Write the grid as a pandapower JSON file (see :func:`to_pandapower`), atomically."""
    import pandapower as pp

    text = pp.to_json(to_pandapower(grid))
    try:
        write_atomically(Path(path), text)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


# -- helpers -------------------------------------------------------------------------------------


def _names(grid: Grid, component: str) -> list[str]:
    return [str(n) for n in grid.names_of(component)]


def _in_service(grid: Grid, component: str, default: np.ndarray) -> np.ndarray:
    """The extra ``in_service`` column, or ``default`` when the grid has none."""
    column = grid.extra.get(component, {}).get("in_service")
    if column is None or len(column) != len(default):
        return default.astype(bool)
    return np.asarray(column, dtype=bool)


def _int(values: np.ndarray, default: int = 0) -> np.ndarray:
    """int8 power-grid-model values with the 'not given' marker replaced by ``default``."""
    out = np.asarray(values).astype(np.int64)
    return np.where(out == _INT8_NA, default, out)


def _vn_kv(grid: Grid, node_ids: np.ndarray) -> np.ndarray:
    return np.asarray(grid.component("node")["u_rated"][grid.node_positions(node_ids)] / 1e3, dtype=np.float64)


def _tap(
    size: np.ndarray, pos: np.ndarray, nom: np.ndarray, tmin: np.ndarray, tmax: np.ndarray, u_side: np.ndarray
) -> dict[str, np.ndarray]:
    """pandapower tap columns from power-grid-model's tap data.

    power-grid-model turns the tap the other way when ``tap_max < tap_min`` (also when equal)
    and clamps ``tap_pos`` into the range; pandapower expresses the direction by the sign of
    ``tap_step_percent`` and wants ``tap_min <= tap_max``.
    """
    pos, nom, tmin, tmax = _int(pos), _int(nom), _int(tmin), _int(tmax)
    direction = np.where(tmax > tmin, 1.0, -1.0)
    lo, hi = np.minimum(tmin, tmax), np.maximum(tmin, tmax)
    has = np.isfinite(size) & (size != 0)
    step = np.divide(size, u_side, out=np.zeros(size.size), where=u_side > 0) * 100 * direction
    return {
        "has": has,
        "tap_pos": np.where(has, np.clip(pos, lo, hi), np.nan),
        "tap_neutral": np.where(has, nom, np.nan),
        "tap_min": np.where(has, lo, np.nan),
        "tap_max": np.where(has, hi, np.nan),
        "tap_step_percent": np.where(has, step, np.nan),
    }


# -- tables --------------------------------------------------------------------------------------


def _buses(net: Any, grid: Grid) -> None:
    import pandapower as pp

    node = grid.component("node")
    n = node.size
    if not n:
        return
    kwargs: dict[str, Any] = {}
    zone = grid.extra.get("node", {}).get("zone")
    if zone is not None and len(zone) == n:
        kwargs["zone"] = [None if z is None or (isinstance(z, float) and np.isnan(z)) else z for z in zone]
    pp.create_buses(
        net,
        n,
        vn_kv=node["u_rated"] / 1e3,
        index=node["id"],
        name=_names(grid, "node"),
        in_service=_in_service(grid, "node", np.ones(n, bool)),
        **kwargs,
    )
    xy = np.asarray(grid.node_xy, dtype=np.float64)
    if xy.shape == (n, 2):
        finite = [bool(v) for v in np.all(np.isfinite(xy), axis=1, keepdims=False).ravel()]
        if any(finite):
            geo: list[str | None] = [
                json.dumps({"type": "Point", "coordinates": [float(x), float(y)]}) if ok else None
                for x, y, ok in zip(xy[:, 0], xy[:, 1], finite, strict=True)
            ]
            net.bus["geo"] = pd.Series(geo, index=net.bus.index, dtype=object)


def _lines(net: Any, grid: Grid) -> None:
    import pandapower as pp

    line = grid.component("line")
    if not line.size:
        return
    omega = 2 * np.pi * grid.frequency_hz
    c_nf = np.nan_to_num(line["c1"]) * 1e9
    g_us = np.nan_to_num(line["tan1"]) * omega * np.nan_to_num(line["c1"]) * 1e6
    c0_nf = line["c0"] * 1e9
    g0_us = np.nan_to_num(line["tan0"]) * omega * np.nan_to_num(line["c0"]) * 1e6
    kind = grid.extra.get("line", {}).get("kind")
    types = ["ol" if k in ("overhead line", "ol") else "cs" for k in kind] if kind is not None else ["cs"] * line.size
    statuses = (line["from_status"] == 1) | (line["to_status"] == 1)
    pp.create_lines_from_parameters(
        net,
        line["from_node"],
        line["to_node"],
        length_km=1.0,
        r_ohm_per_km=line["r1"],
        x_ohm_per_km=line["x1"],
        c_nf_per_km=c_nf,
        g_us_per_km=g_us,
        max_i_ka=line["i_n"] / 1e3,
        name=_names(grid, "line"),
        index=line["id"],
        type=types,
        in_service=_in_service(grid, "line", statuses),
        r0_ohm_per_km=line["r0"],
        x0_ohm_per_km=line["x0"],
        c0_nf_per_km=c0_nf,
        g0_us_per_km=np.where(np.isnan(c0_nf), np.nan, g0_us),
    )


def _transformers(net: Any, grid: Grid) -> None:
    import pandapower as pp

    t = grid.component("transformer")
    if not t.size:
        return
    # pandapower wants the high-voltage winding first; power-grid-model's from side may be either
    swap = t["u1"] < t["u2"]
    hv_bus = np.where(swap, t["to_node"], t["from_node"])
    lv_bus = np.where(swap, t["from_node"], t["to_node"])
    vn_hv = np.where(swap, t["u2"], t["u1"]) / 1e3
    vn_lv = np.where(swap, t["u1"], t["u2"]) / 1e3
    w_hv = np.where(swap, t["winding_to"], t["winding_from"])
    w_lv = np.where(swap, t["winding_from"], t["winding_to"])
    clock = _int(t["clock"]) % 12
    clock = np.where(swap, (12 - clock) % 12, clock)
    vector_group = [
        f"{_WINDING_LETTERS.get(int(a), 'YN')}{_WINDING_LETTERS.get(int(b), 'YN').lower()}{int(c)}"
        for a, b, c in zip(w_hv, w_lv, clock, strict=True)
    ]
    tap_side_lv = (_int(t["tap_side"]) == 1) != swap
    u_side = np.where(_int(t["tap_side"]) == 1, t["u2"], t["u1"])
    tap = _tap(t["tap_size"], t["tap_pos"], t["tap_nom"], t["tap_min"], t["tap_max"], u_side)
    has = tap["has"]
    sn = t["sn"]
    vk = t["uk"] * 100
    zero = _zero_sequence(t, vk, sn)
    statuses = (t["from_status"] == 1) | (t["to_status"] == 1)
    pp.create_transformers_from_parameters(
        net,
        hv_bus,
        lv_bus,
        sn_mva=sn / 1e6,
        vn_hv_kv=vn_hv,
        vn_lv_kv=vn_lv,
        vkr_percent=t["pk"] / sn * 100,
        vk_percent=vk,
        pfe_kw=np.nan_to_num(t["p0"]) / 1e3,
        i0_percent=np.nan_to_num(t["i0"]) * 100,
        shift_degree=clock * 30.0,
        tap_side=[("lv" if lv else "hv") if h else None for lv, h in zip(tap_side_lv, has, strict=True)],
        tap_neutral=tap["tap_neutral"],
        tap_max=tap["tap_max"],
        tap_min=tap["tap_min"],
        tap_step_percent=tap["tap_step_percent"],
        tap_step_degree=np.where(has, 0.0, np.nan),
        tap_pos=tap["tap_pos"],
        tap_changer_type=["Ratio" if h else None for h in has],
        in_service=_in_service(grid, "transformer", statuses),
        name=_names(grid, "transformer"),
        index=t["id"],
        **zero,
    )
    # pandapower's vectorised create cannot take a list of strings for vector_group
    net.trafo.loc[t["id"], "vector_group"] = vector_group


def _zero_sequence(t: np.ndarray, vk: np.ndarray, sn: np.ndarray) -> dict[str, np.ndarray]:
    """pandapower's zero-sequence columns, the inverse of the importer's mapping."""
    i0z = t["i0_zero_sequence"]
    p0z = t["p0_zero_sequence"]
    ok = np.isfinite(i0z) & np.isfinite(p0z) & (i0z > 0) & (p0z > 0)
    if not ok.any():
        return {}
    mag0 = np.divide(1e4, vk * i0z, out=np.full(t.size, np.nan), where=ok)
    ratio = np.divide(i0z * sn, p0z, out=np.full(t.size, np.nan), where=ok)
    mag0_rx = np.divide(
        1.0, np.sqrt(np.maximum(ratio**2 - 1, 0.0)), out=np.full(t.size, np.nan), where=ok & (ratio > 1)
    )
    return {
        "vk0_percent": np.where(ok, vk, np.nan),
        "vkr0_percent": np.where(ok, t["pk"] / sn * 100, np.nan),
        "mag0_percent": mag0,
        "mag0_rx": mag0_rx,
        "si0_hv_partial": np.where(ok, 0.9, np.nan),
    }


def _pandapower_pairs(t: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return pandapower's ([vk_hv, vk_mv, vk_lv], [vkr_hv, vkr_mv, vkr_lv]) as fractions.

    The inverse of the importer's ``_three_winding_short_circuit``: power-grid-model's pair
    values are pair sums of pandapower's star, so the star elements come back from the pair
    sums, and pandapower's pairs are their R and X added separately, each on the smaller
    rating of the pair.
    """
    sn = [t["sn_1"], t["sn_2"], t["sn_3"]]
    s1 = sn[0]
    pgm_pairs = {(0, 1): ("uk_12", "pk_12"), (0, 2): ("uk_13", "pk_13"), (1, 2): ("uk_23", "pk_23")}
    z: dict[tuple[int, int], np.ndarray] = {}
    r: dict[tuple[int, int], np.ndarray] = {}
    for (a, b), (uk, pk) in pgm_pairs.items():
        base = np.minimum(sn[a], sn[b])
        z[(a, b)] = t[uk] * s1 / base
        r[(a, b)] = t[pk] * s1 / base**2
    z_star = [
        (z[(0, 1)] + z[(0, 2)] - z[(1, 2)]) / 2,
        (z[(0, 1)] + z[(1, 2)] - z[(0, 2)]) / 2,
        (z[(0, 2)] + z[(1, 2)] - z[(0, 1)]) / 2,
    ]
    r_star = [
        (r[(0, 1)] + r[(0, 2)] - r[(1, 2)]) / 2,
        (r[(0, 1)] + r[(1, 2)] - r[(0, 2)]) / 2,
        (r[(0, 2)] + r[(1, 2)] - r[(0, 1)]) / 2,
    ]
    with np.errstate(invalid="ignore"):
        x_star = [np.sign(z_star[k]) * np.sqrt(np.maximum(z_star[k] ** 2 - r_star[k] ** 2, 0.0)) for k in range(3)]
    vk: list[np.ndarray] = []
    vkr: list[np.ndarray] = []
    for a, b in ((0, 1), (1, 2), (0, 2)):  # pandapower's hv (hv-mv), mv (mv-lv), lv (hv-lv)
        base = np.minimum(sn[a], sn[b])
        r_pair = r_star[a] + r_star[b]
        x_pair = x_star[a] + x_star[b]
        vk.append(np.hypot(r_pair, x_pair) * base / s1)
        vkr.append(r_pair * base / s1)
    return vk, vkr


def _three_winding(net: Any, grid: Grid) -> None:
    import pandapower as pp

    t = grid.component("three_winding_transformer")
    if not t.size:
        return
    sn1, sn2, sn3 = t["sn_1"], t["sn_2"], t["sn_3"]
    clock12 = _int(t["clock_12"]) % 12
    clock13 = _int(t["clock_13"]) % 12
    vector_group = [
        f"{_WINDING_LETTERS.get(int(a), 'YN')}{_WINDING_LETTERS.get(int(b), 'YN').lower()}{int(c2)}"
        f"{_WINDING_LETTERS.get(int(c), 'YN').lower()}{int(c3)}"
        for a, b, c, c2, c3 in zip(t["winding_1"], t["winding_2"], t["winding_3"], clock12, clock13, strict=True)
    ]
    side = np.clip(_int(t["tap_side"]), 0, 2)
    u_side = np.choose(side, [t["u1"], t["u2"], t["u3"]])
    tap = _tap(t["tap_size"], t["tap_pos"], t["tap_nom"], t["tap_min"], t["tap_max"], u_side)
    has = tap["has"]
    statuses = (t["status_1"] == 1) | (t["status_2"] == 1) | (t["status_3"] == 1)
    vk, vkr = _pandapower_pairs(t)
    pp.create_transformers3w_from_parameters(
        net,
        t["node_1"],
        t["node_2"],
        t["node_3"],
        vn_hv_kv=t["u1"] / 1e3,
        vn_mv_kv=t["u2"] / 1e3,
        vn_lv_kv=t["u3"] / 1e3,
        sn_hv_mva=sn1 / 1e6,
        sn_mv_mva=sn2 / 1e6,
        sn_lv_mva=sn3 / 1e6,
        vk_hv_percent=vk[0] * 100,
        vk_mv_percent=vk[1] * 100,
        vk_lv_percent=vk[2] * 100,
        vkr_hv_percent=vkr[0] * 100,
        vkr_mv_percent=vkr[1] * 100,
        vkr_lv_percent=vkr[2] * 100,
        pfe_kw=np.nan_to_num(t["p0"]) / 1e3,
        i0_percent=np.nan_to_num(t["i0"]) * 100,
        shift_mv_degree=clock12 * 30.0,
        shift_lv_degree=clock13 * 30.0,
        tap_side=[("hv", "mv", "lv")[s] if h else None for s, h in zip(side, has, strict=True)],
        tap_step_percent=tap["tap_step_percent"],
        tap_step_degree=np.where(has, 0.0, np.nan),
        tap_pos=tap["tap_pos"],
        tap_neutral=tap["tap_neutral"],
        tap_max=tap["tap_max"],
        tap_min=tap["tap_min"],
        name=_names(grid, "three_winding_transformer"),
        in_service=_in_service(grid, "three_winding_transformer", statuses),
        index=t["id"],
    )
    # pandapower's vectorised create cannot take lists of strings for these two columns
    net.trafo3w.loc[t["id"], "vector_group"] = vector_group
    net.trafo3w.loc[t["id"], "tap_changer_type"] = ["Ratio" if h else None for h in has]


def _switches(net: Any, grid: Grid) -> None:
    """Bus-bus switches for links, branch switches, and open switches for open branch ends."""
    import pandapower as pp

    buses: list[np.ndarray] = []
    elements: list[np.ndarray] = []
    ets: list[np.ndarray] = []
    closed: list[np.ndarray] = []
    types: list[np.ndarray] = []
    names: list[np.ndarray] = []
    index: list[np.ndarray] = []

    def add(bus: Any, element: Any, et: Any, is_closed: Any, kind: Any, name: Any, idx: Any) -> None:
        buses.append(np.asarray(bus, dtype=np.int64))
        elements.append(np.asarray(element, dtype=np.int64))
        ets.append(np.asarray(et, dtype=object))
        closed.append(np.asarray(is_closed, dtype=bool))
        types.append(np.asarray(kind, dtype=object))
        names.append(np.asarray(name, dtype=object))
        index.append(np.asarray(idx, dtype=np.int64))

    sw = grid.switches
    link = grid.component("link")
    branch_tables = {"line": "l", "transformer": "t", "three_winding_transformer": "t3"}
    covered_links = np.zeros(link.size, dtype=bool)
    if sw.size:
        et = np.full(sw.size, None, dtype=object)
        element = sw["element"].astype(np.int64).copy()
        for component, code in branch_tables.items():
            et[np.isin(sw["element"], grid.component(component)["id"])] = code
        in_link = np.isin(sw["element"], link["id"])
        if in_link.any():
            rows = np.searchsorted(link["id"], sw["element"][in_link], sorter=np.argsort(link["id"]))
            rows = np.argsort(link["id"])[rows]
            at_from = link["from_node"][rows] == sw["node"][in_link]
            element[in_link] = np.where(at_from, link["to_node"][rows], link["from_node"][rows])
            et[in_link] = "b"
            covered_links[rows] = True
        if (et == None).any():  # noqa: E711 - elementwise comparison on an object array
            bad = int(np.flatnonzero(et == None)[0])  # noqa: E711
            raise InputError(
                f"grid {grid.name}: switch '{grid.switch_names[bad] if grid.switch_names.size else sw['id'][bad]}' "
                f"refers to element {sw['element'][bad]}, which is not a line, transformer or link"
            )
        kinds = grid.switch_kinds if grid.switch_kinds.size == sw.size else np.full(sw.size, None, dtype=object)
        snames = grid.switch_names if grid.switch_names.size == sw.size else sw["id"].astype(str).astype(object)
        add(sw["node"], element, et, sw["closed"] == 1, kinds, snames, sw["id"])

    # links that no switch stands for become bus-bus switches of their own
    free = ~covered_links
    if free.any():
        lk = link[free]
        add(
            lk["from_node"],
            lk["to_node"],
            np.full(lk.size, "b", dtype=object),
            (lk["from_status"] == 1) & (lk["to_status"] == 1),
            np.full(lk.size, None, dtype=object),
            np.asarray(grid.names_of("link"), dtype=object)[free],
            lk["id"],
        )

    # branch ends that are open in the arrays without an open switch there
    open_at = set()
    if sw.size:
        opened = sw["closed"] == 0
        open_at = set(zip(sw["element"][opened].tolist(), sw["node"][opened].tolist(), strict=True))
    next_id = grid.max_id + 1
    ends: list[tuple[str, str, str, str]] = [
        ("line", "from_status", "from_node", "from"),
        ("line", "to_status", "to_node", "to"),
        ("transformer", "from_status", "from_node", "from"),
        ("transformer", "to_status", "to_node", "to"),
        ("three_winding_transformer", "status_1", "node_1", "1"),
        ("three_winding_transformer", "status_2", "node_2", "2"),
        ("three_winding_transformer", "status_3", "node_3", "3"),
    ]
    for component, status_col, node_col, label in ends:
        arr = grid.component(component)
        if not arr.size:
            continue
        table = {"line": net.line, "transformer": net.trafo, "three_winding_transformer": net.trafo3w}[component]
        in_service = table["in_service"].reindex(arr["id"]).to_numpy(dtype=bool)
        need = (arr[status_col] == 0) & in_service
        if not need.any():
            continue
        rows = np.flatnonzero(need)
        rows = np.array([r for r in rows if (int(arr["id"][r]), int(arr[node_col][r])) not in open_at], dtype=np.int64)
        if not rows.size:
            continue
        bnames = np.asarray(grid.names_of(component), dtype=object)[rows]
        add(
            arr[node_col][rows],
            arr["id"][rows],
            np.full(rows.size, branch_tables[component], dtype=object),
            np.zeros(rows.size, bool),
            np.full(rows.size, None, dtype=object),
            np.array([f"{n} end {label} open" for n in bnames], dtype=object),
            np.arange(next_id, next_id + rows.size),
        )
        next_id += rows.size

    if not buses:
        return
    bus = np.concatenate(buses)
    kind_all = np.concatenate(types)
    pp.create_switches(
        net,
        bus,
        np.concatenate(elements),
        et=list(np.concatenate(ets)),
        closed=np.concatenate(closed),
        name=list(np.concatenate(names)),
        index=np.concatenate(index),
        type=[None if k is None or (isinstance(k, float) and np.isnan(k)) else k for k in kind_all],
    )


def _sources(net: Any, grid: Grid) -> None:
    import pandapower as pp

    src = grid.component("source")
    if not src.size:
        return
    extra = grid.extra.get("source", {})

    def column(key: str, fallback: np.ndarray) -> np.ndarray:
        value = extra.get(key)
        return np.asarray(value, dtype=np.float64) if value is not None and len(value) == src.size else fallback

    nan = np.full(src.size, np.nan)
    sk_max = column("sk_max_va", src["sk"]) / 1e6
    sk_min = column("sk_min_va", nan) / 1e6
    rx_max = column("rx_max", src["rx_ratio"])
    rx_min = column("rx_min", nan)
    names = _names(grid, "source")
    # a handful of sources per grid at most: pandapower has no vectorised create for ext_grid
    for k in range(src.size):
        pp.create_ext_grid(
            net,
            int(src["node"][k]),
            vm_pu=float(src["u_ref"][k]),
            va_degree=float(np.rad2deg(np.nan_to_num(src["u_ref_angle"][k]))),
            name=names[k],
            in_service=bool(src["status"][k] == 1),
            s_sc_max_mva=float(sk_max[k]),
            s_sc_min_mva=float(sk_min[k]),
            rx_max=float(rx_max[k]),
            rx_min=float(rx_min[k]),
            index=int(src["id"][k]),
        )


def _zip_percent(types: np.ndarray) -> dict[str, np.ndarray]:
    z = np.where(types == LoadGenType.const_impedance, 100.0, 0.0)
    i = np.where(types == LoadGenType.const_current, 100.0, 0.0)
    return {"const_z_p_percent": z, "const_z_q_percent": z, "const_i_p_percent": i, "const_i_q_percent": i}


def _loads(net: Any, grid: Grid) -> None:
    import pandapower as pp

    load = grid.component("sym_load")
    if not load.size:
        return
    names = np.asarray(_names(grid, "sym_load"), dtype=object)
    kind = grid.extra.get("sym_load", {}).get("kind")
    is_storage = (
        (np.asarray(kind, dtype=object) == "storage") & (load["type"] == LoadGenType.const_power)
        if kind is not None and len(kind) == load.size
        else np.zeros(load.size, bool)
    )
    plain = ~is_storage
    if plain.any():
        ld = load[plain]
        pp.create_loads(
            net,
            ld["node"],
            p_mw=ld["p_specified"] / 1e6,
            q_mvar=np.nan_to_num(ld["q_specified"]) / 1e6,
            name=list(names[plain]),
            index=ld["id"],
            in_service=ld["status"] == 1,
            **_zip_percent(ld["type"]),
        )
    if is_storage.any():
        st = load[is_storage]
        e_mwh = grid.extra.get("sym_load", {}).get("max_e_mwh")
        max_e = np.asarray(e_mwh, dtype=np.float64)[is_storage] if e_mwh is not None else np.full(st.size, np.nan)
        pp.create_storages(
            net,
            st["node"],
            p_mw=st["p_specified"] / 1e6,
            max_e_mwh=max_e,
            q_mvar=np.nan_to_num(st["q_specified"]) / 1e6,
            name=list(names[is_storage]),
            index=st["id"],
            in_service=st["status"] == 1,
        )


def _generators(net: Any, grid: Grid) -> None:
    import pandapower as pp

    gen = grid.component("sym_gen")
    reg = grid.component("voltage_regulator")
    known = np.concatenate([gen["id"], grid.component("sym_load")["id"]])
    if reg.size and not np.isin(reg["regulated_object"], gen["id"]).all():
        bad = reg["regulated_object"][~np.isin(reg["regulated_object"], gen["id"])][0]
        what = "a load" if np.isin(bad, known) else "an element the grid does not have"
        raise InputError(
            f"grid {grid.name}: a voltage regulator regulates {what} ({bad}); pandapower regulates only generators"
        )
    if not gen.size:
        return
    names = np.asarray(_names(grid, "sym_gen"), dtype=object)
    extra = grid.extra.get("sym_gen", {})
    kind = extra.get("kind")
    kinds = np.asarray(kind, dtype=object) if kind is not None and len(kind) == gen.size else None
    sn_va = extra.get("sn_va")
    sn_mva = np.asarray(sn_va, dtype=np.float64) / 1e6 if sn_va is not None and len(sn_va) == gen.size else None
    active = reg[reg["status"] == 1]
    regulated = np.isin(gen["id"], active["regulated_object"])
    const_power = gen["type"] == LoadGenType.const_power
    if regulated.any():
        g = gen[regulated]
        order = np.argsort(active["regulated_object"])
        rows = order[np.searchsorted(active["regulated_object"], g["id"], sorter=order)]
        r = active[rows]
        pp.create_gens(
            net,
            g["node"],
            p_mw=g["p_specified"] / 1e6,
            vm_pu=r["u_ref"],
            name=list(names[regulated]),
            index=g["id"],
            in_service=g["status"] == 1,
            min_q_mvar=r["q_min"] / 1e6,
            max_q_mvar=r["q_max"] / 1e6,
            **({"sn_mva": sn_mva[regulated]} if sn_mva is not None else {}),
        )
    static = ~regulated & const_power
    if static.any():
        s = gen[static]
        pp.create_sgens(
            net,
            s["node"],
            p_mw=s["p_specified"] / 1e6,
            q_mvar=np.nan_to_num(s["q_specified"]) / 1e6,
            name=list(names[static]),
            index=s["id"],
            in_service=s["status"] == 1,
            **({"type": list(kinds[static])} if kinds is not None else {}),
            **({"sn_mva": sn_mva[static]} if sn_mva is not None else {}),
        )
    voltage_dependent = ~regulated & ~const_power
    if voltage_dependent.any():
        v = gen[voltage_dependent]
        pp.create_loads(
            net,
            v["node"],
            p_mw=-v["p_specified"] / 1e6,
            q_mvar=-np.nan_to_num(v["q_specified"]) / 1e6,
            name=list(names[voltage_dependent]),
            index=v["id"],
            in_service=v["status"] == 1,
            **_zip_percent(v["type"]),
        )


def _shunts(net: Any, grid: Grid) -> None:
    import pandapower as pp

    shunt = grid.component("shunt")
    if not shunt.size:
        return
    vn = _vn_kv(grid, shunt["node"])
    pp.create_shunts(
        net,
        shunt["node"],
        q_mvar=-shunt["b1"] * vn**2,
        p_mw=shunt["g1"] * vn**2,
        vn_kv=vn,
        name=_names(grid, "shunt"),
        index=shunt["id"],
        in_service=shunt["status"] == 1,
    )


def _unbalanced(net: Any, grid: Grid) -> None:
    """Unbalanced loads and generators (wye-connected, constant power), appended as whole tables."""
    for component, table in (("asym_load", "asymmetric_load"), ("asym_gen", "asymmetric_sgen")):
        arr = grid.component(component)
        if not arr.size:
            continue
        if (arr["type"] != LoadGenType.const_power).any():
            raise InputError(f"grid {grid.name}: voltage-dependent {component} cannot be exported to pandapower")
        columns: dict[str, Any] = {"name": _names(grid, component), "bus": arr["node"]}
        for k, ph in enumerate("abc"):
            columns[f"p_{ph}_mw"] = arr["p_specified"][:, k] / 1e6
            columns[f"q_{ph}_mvar"] = np.nan_to_num(arr["q_specified"][:, k]) / 1e6
        columns.update({"sn_mva": np.nan, "scaling": 1.0, "in_service": arr["status"] == 1, "type": "wye"})
        if table == "asymmetric_sgen":
            columns["current_source"] = True
        frame = pd.DataFrame(columns, index=pd.Index(arr["id"].astype(np.int64)))
        existing = net[table]
        frame = frame.reindex(columns=existing.columns).astype(existing.dtypes.to_dict())
        net[table] = frame if existing.empty else pd.concat([existing, frame])

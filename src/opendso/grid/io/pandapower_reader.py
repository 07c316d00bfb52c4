"""Vectorised conversion from a pandapower network to an OpenDSO :class:`~opendso.grid.model.Grid`.

Each pandapower table becomes one power-grid-model array in a handful of numpy operations, so a
100,000-bus network converts in a fraction of a second (power-grid-model-io's converter takes
seconds). The conversion follows pandapower's own power-flow model wherever the two tools can
be made to agree:

- Transformer taps are honoured whenever ``tap_side``, ``tap_pos`` and ``tap_step_percent`` are
  given, even if ``tap_changer_type`` is empty (SimBench leaves it empty; pandapower 3.x then
  ignores the tap, which is not what the data mean).
- Vector groups come from ``vector_group``, else from the standard type's name (``... YNd5``),
  else from the phase shift (odd clock: Dyn, even clock: YNyn); the clock is the phase shift
  divided by 30 degrees.
- The external grid is stiff in power flow: its ``vm_pu`` is the voltage at its bus, as in
  pandapower. Its short-circuit power and R/X ratio (``s_sc_max_mva``, ``s_sc_min_mva``,
  ``rx_max``, ``rx_min``) are kept in ``extra["source"]`` for short-circuit studies, which use
  them instead.
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from power_grid_model import LoadGenType, MeasuredTerminalType, WindingType

from opendso.errors import GridSourceError
from opendso.grid.model import (
    SIDE_FROM,
    SIDE_LINK,
    SIDE_TO,
    SIDE_WINDING,
    SWITCH_DTYPE,
    Grid,
    ProfileAssignment,
    Profiles,
    apply_switches,
    empty_component,
)

log = logging.getLogger(__name__)

#: Short-circuit power of a source in power flow: large enough that the source is stiff to
#: within 1e-9 p.u. on any distribution grid, small enough to keep the matrix well conditioned.
STIFF_SOURCE_SK_VA = 1e15

_UNSUPPORTED_TABLES = ("ward", "xward", "impedance", "dcline", "tcsc", "svc", "ssc", "vsc", "motor")

_VECTOR_GROUP = re.compile(r"(YN|Y|D|ZN|Z)(yn|y|d|zn|z)(\d{1,2})?\s*$")
_WINDING = {
    "YN": WindingType.wye_n,
    "Y": WindingType.wye,
    "D": WindingType.delta,
    "ZN": WindingType.zigzag_n,
    "Z": WindingType.zigzag,
}
_GEO = re.compile(r'"coordinates"\s*:\s*\[\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)')


class _Ids:
    """Hands out consecutive ids and remembers the rows of each pandapower table."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> npt.NDArray[np.int32]:
        ids = np.arange(self.next, self.next + n, dtype=np.int32)
        self.next += n
        return ids


def _col(df: pd.DataFrame, name: str, default: Any, dtype: Any = np.float64) -> np.ndarray:
    """Return a column as a numpy array, ``default`` where the column is missing or NaN."""
    if name not in df.columns:
        return np.full(len(df), default, dtype=dtype)
    column = df[name]
    if dtype is object:
        return column.to_numpy().astype(object)
    if np.dtype(dtype).kind == "b":
        if column.dtype == bool:
            return column.to_numpy(copy=True)
        return column.fillna(default).to_numpy().astype(bool)
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        out = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        out = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if default is not None and not (isinstance(default, float) and np.isnan(default)):
        out = np.where(np.isnan(out), default, out)
    return out.astype(dtype)


def _names(df: pd.DataFrame, prefix: str) -> npt.NDArray[np.object_]:
    """Source names; an element without a name is called ``<table> <index>``."""
    index = df.index.to_numpy()
    if "name" in df.columns:
        names = df["name"].to_numpy(dtype=object).copy()
        missing = pd.isna(names)
        missing[~missing] = names[~missing] == ""
    else:
        names = np.empty(index.size, dtype=object)
        missing = np.ones(index.size, dtype=bool)
    if missing.any():
        names[missing] = [f"{prefix} {i}" for i in index[missing].tolist()]
    return names


def _bus_ids(
    bus_index: pd.Index, node_ids: np.ndarray, values: np.ndarray, source: str, table: str, fld: str, names: np.ndarray
) -> npt.NDArray[np.int32]:
    """Map pandapower bus indices to node ids; name the first element whose bus does not exist."""
    pos = bus_index.get_indexer(pd.Index(values))
    if (pos < 0).any():
        bad = int(np.flatnonzero(pos < 0)[0])
        raise GridSourceError(
            source, f"refers to bus {values[bad]}, which does not exist", element=f"{table} '{names[bad]}'", field=fld
        )
    return node_ids[pos]


def _parse_vector_group(text: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse vector groups like ``Dyn5``; return winding_from, winding_to (-1 if unknown) and clock (-1)."""
    n = text.size
    wf = np.full(n, -1, dtype=np.int8)
    wt = np.full(n, -1, dtype=np.int8)
    clock = np.full(n, -1, dtype=np.int8)
    is_text = np.array([isinstance(v, str) for v in text], dtype=bool) if n else np.zeros(0, dtype=bool)
    if not is_text.any():
        return wf, wt, clock
    # a network has a handful of distinct vector groups: parse each once
    unique, inverse = np.unique(text[is_text].astype(str), return_inverse=True)
    parsed = np.full((unique.size, 3), -1, dtype=np.int8)
    for k, value in enumerate(unique):
        match = _VECTOR_GROUP.search(value.strip())
        if match is not None:
            parsed[k, 0] = _WINDING[match.group(1)]
            parsed[k, 1] = _WINDING[match.group(2).upper()]
            parsed[k, 2] = int(match.group(3)) % 12 if match.group(3) is not None else -1
    wf[is_text], wt[is_text], clock[is_text] = parsed[inverse].T
    return wf, wt, clock


def _geo_xy(series: pd.Series | None, n: int) -> npt.NDArray[np.float64]:
    """Extract the first coordinate pair of GeoJSON strings (NaN where there is none)."""
    xy = np.full((n, 2), np.nan)
    if series is None:
        return xy
    values = series.to_numpy(dtype=object)
    is_text = pd.notna(values)
    if not is_text.any():
        return xy
    # One regex pass over all strings joined is several times faster than one match per string;
    # it is used when every string gave exactly one pair, so the pairs line up with the rows.
    try:
        pairs = _GEO.findall("\n".join(values[is_text]))
    except TypeError:  # something other than strings: take the slow path below
        pairs = []
    if pairs and len(pairs) == int(is_text.sum()):
        # Arrow parses the numbers in C++, a Python float() per number costs three times as much
        numbers = pa.array(list(itertools.chain.from_iterable(pairs)), type=pa.string())
        try:
            xy[is_text] = pc.cast(numbers, pa.float64()).to_numpy().reshape(-1, 2)
        except pa.ArrowInvalid:
            pass  # a number Arrow does not read: take the slow path below
        else:
            return xy
    extracted = series.astype("string").str.extract(_GEO)
    xy[:, 0] = pd.to_numeric(extracted[0], errors="coerce").to_numpy(dtype=np.float64)
    xy[:, 1] = pd.to_numeric(extracted[1], errors="coerce").to_numpy(dtype=np.float64)
    return xy


def from_pandapower(net: Any, *, name: str = "pandapower", source: str | None = None) -> Grid:
    """Return the OpenDSO grid of a pandapower network.

    ``source`` is used in error messages (the file or source string); the network itself is
    not changed. Raises :class:`~opendso.errors.GridSourceError` naming the table, element and
    field when the network uses something OpenDSO cannot represent.
    """
    src = source or name
    for table in _UNSUPPORTED_TABLES:
        df = net.get(table) if hasattr(net, "get") else None
        if isinstance(df, pd.DataFrame) and len(df) and _col(df, "in_service", True, bool).any():
            raise GridSourceError(src, f"pandapower table '{table}' is not supported", element=table)

    ids = _Ids()
    data: dict[str, np.ndarray] = {}
    names: dict[str, np.ndarray] = {}
    extra: dict[str, dict[str, np.ndarray]] = {}
    frequency = float(getattr(net, "f_hz", 50.0) or 50.0)

    # -- nodes --------------------------------------------------------------------------------
    bus = net.bus
    bus_index = bus.index
    node = empty_component("node", len(bus))
    node["id"] = ids.take(len(bus))
    node["u_rated"] = _col(bus, "vn_kv", np.nan) * 1e3
    node_ids = node["id"]
    bus_in_service = _col(bus, "in_service", True, bool)
    data["node"] = node
    names["node"] = _names(bus, "bus")
    extra["node"] = {
        "in_service": bus_in_service,
        "source_index": bus_index.to_numpy(),
        "zone": _col(bus, "zone", None, object),
        "substation": _col(bus, "substation", None, object),
        "subnet": _col(bus, "subnet", None, object),
    }
    if "geo" in bus.columns:
        node_xy = _geo_xy(bus["geo"], len(bus))
    elif "bus_geodata" in net and len(net.bus_geodata):
        node_xy = np.full((len(bus), 2), np.nan)
        geo = net.bus_geodata.reindex(bus_index)
        node_xy[:, 0] = geo["x"].to_numpy(dtype=float)
        node_xy[:, 1] = geo["y"].to_numpy(dtype=float)
    else:
        node_xy = np.full((len(bus), 2), np.nan)

    def bus_ok(values: np.ndarray) -> npt.NDArray[np.bool_]:
        ok: npt.NDArray[np.bool_] = bus_in_service[bus_index.get_indexer(values)]
        return ok

    # -- lines --------------------------------------------------------------------------------
    line = net.line
    line_ids = ids.take(len(line))
    if len(line):
        lnames = _names(line, "line")
        from_bus = line["from_bus"].to_numpy()
        to_bus = line["to_bus"].to_numpy()
        length = _col(line, "length_km", np.nan)
        parallel = _col(line, "parallel", 1.0)
        c_nf = _col(line, "c_nf_per_km", 0.0)
        c0_nf = _col(line, "c0_nf_per_km", 0.0)
        g_us = _col(line, "g_us_per_km", 0.0)
        g0_us = _col(line, "g0_us_per_km", 0.0)
        omega_nf = 2 * np.pi * frequency * 1e-3
        arr = empty_component("line", len(line))
        arr["id"] = line_ids
        arr["from_node"] = _bus_ids(bus_index, node_ids, from_bus, src, "line", "from_bus", lnames)
        arr["to_node"] = _bus_ids(bus_index, node_ids, to_bus, src, "line", "to_bus", lnames)
        mult = length / parallel
        arr["r1"] = _col(line, "r_ohm_per_km", np.nan) * mult
        arr["x1"] = _col(line, "x_ohm_per_km", np.nan) * mult
        arr["c1"] = c_nf * length * parallel * 1e-9
        arr["tan1"] = np.divide(g_us, c_nf * omega_nf, out=np.zeros(len(line)), where=c_nf != 0)
        arr["r0"] = _col(line, "r0_ohm_per_km", np.nan) * mult
        arr["x0"] = _col(line, "x0_ohm_per_km", np.nan) * mult
        arr["c0"] = c0_nf * length * parallel * 1e-9
        arr["tan0"] = np.divide(g0_us, c0_nf * omega_nf, out=np.zeros(len(line)), where=c0_nf != 0)
        arr["i_n"] = _col(line, "max_i_ka", np.nan) * 1e3 * _col(line, "df", 1.0) * parallel
        data["line"] = arr
        names["line"] = lnames
        kind = np.where(_col(line, "type", "", object) == "ol", "overhead line", "cable").astype(object)
        extra["line"] = {
            "in_service": _col(line, "in_service", True, bool),
            "kind": kind,
            "length_km": length,
            "source_index": line.index.to_numpy(),
            "std_type": _col(line, "std_type", None, object),
        }

    # -- two-winding transformers ----------------------------------------------------------------
    trafo = net.trafo
    trafo_ids = ids.take(len(trafo))
    if len(trafo):
        data["transformer"], names["transformer"], extra["transformer"] = _transformers(
            trafo, trafo_ids, bus_index, node_ids, bus_ok, src
        )

    # -- three-winding transformers ----------------------------------------------------------------
    trafo3w = net.get("trafo3w") if hasattr(net, "get") else None
    trafo3w_ids = ids.take(len(trafo3w) if trafo3w is not None else 0)
    if trafo3w is not None and len(trafo3w):
        data["three_winding_transformer"], names["three_winding_transformer"], extra["three_winding_transformer"] = (
            _three_winding(trafo3w, trafo3w_ids, bus_index, node_ids, bus_ok, src)
        )

    # -- switches ----------------------------------------------------------------------------------
    switch = net.switch
    sw = np.zeros(len(switch), dtype=SWITCH_DTYPE)
    switch_names = _names(switch, "switch")
    switch_kinds = _col(switch, "type", None, object)
    links: dict[str, np.ndarray] = {}
    if len(switch):
        sw["id"] = ids.take(len(switch))
        et = switch["et"].to_numpy(dtype=object)
        sbus = switch["bus"].to_numpy()
        element = switch["element"].to_numpy()
        sw["node"] = _bus_ids(bus_index, node_ids, sbus, src, "switch", "bus", switch_names)
        sw["closed"] = _col(switch, "closed", True, bool)
        is_bus = et == "b"
        # bus-bus switches become links carrying the switch's own id
        if is_bus.any():
            link = empty_component("link", int(is_bus.sum()))
            link["id"] = ids.take(link.size)
            link["from_node"] = sw["node"][is_bus]
            link["to_node"] = _bus_ids(
                bus_index, node_ids, element[is_bus], src, "switch", "element", switch_names[is_bus]
            )
            sw["element"][is_bus] = link["id"]
            sw["side"][is_bus] = SIDE_LINK
            links = {"array": link, "names": switch_names[is_bus]}
        for code, table, ids_of, from_col in (("l", line, line_ids, "from_bus"), ("t", trafo, trafo_ids, "hv_bus")):
            sel = et == code
            if not sel.any():
                continue
            pos = table.index.get_indexer(element[sel])
            if (pos < 0).any():
                bad = np.flatnonzero(sel)[np.flatnonzero(pos < 0)[0]]
                raise GridSourceError(
                    src,
                    f"refers to element {element[bad]}, which does not exist",
                    element=f"switch '{switch_names[bad]}'",
                    field="element",
                )
            sw["element"][sel] = ids_of[pos]
            at_from = table[from_col].to_numpy()[pos] == sbus[sel]
            sw["side"][sel] = np.where(at_from, SIDE_FROM, SIDE_TO)
        sel3 = et == "t3"
        if sel3.any() and trafo3w is not None:
            pos = trafo3w.index.get_indexer(element[sel3])
            sw["element"][sel3] = trafo3w_ids[pos]
            sw["side"][sel3] = SIDE_WINDING  # the switch's node names the winding; statuses set here
            t3 = data["three_winding_transformer"]
            for k, col in enumerate(("hv_bus", "mv_bus", "lv_bus"), start=1):
                at = trafo3w[col].to_numpy()[pos] == sbus[sel3]
                opened = at & (sw["closed"][sel3] == 0)
                t3[f"status_{k}"][pos[opened]] = 0
    if "remote_controlled" in switch.columns:
        # which switches the control room can operate (FLISR uses only these); absent: every switch
        extra["switch"] = {"remote_controlled": _col(switch, "remote_controlled", True, bool)}
    if links:
        data["link"] = links["array"]
        names["link"] = links["names"]
        extra["link"] = {"in_service": np.ones(links["array"].size, dtype=bool)}

    # -- sources -----------------------------------------------------------------------------------
    ext_grid = net.ext_grid
    if len(ext_grid):
        enames = _names(ext_grid, "ext_grid")
        arr = empty_component("source", len(ext_grid))
        arr["id"] = ids.take(len(ext_grid))
        ebus = ext_grid["bus"].to_numpy()
        arr["node"] = _bus_ids(bus_index, node_ids, ebus, src, "ext_grid", "bus", enames)
        in_service = _col(ext_grid, "in_service", True, bool) & bus_ok(ebus)
        arr["status"] = in_service
        arr["u_ref"] = _col(ext_grid, "vm_pu", 1.0)
        arr["u_ref_angle"] = np.deg2rad(_col(ext_grid, "va_degree", 0.0))
        arr["sk"] = STIFF_SOURCE_SK_VA
        arr["rx_ratio"] = 0.1
        data["source"] = arr
        names["source"] = enames
        extra["source"] = {
            "in_service": in_service,
            "sk_max_va": _col(ext_grid, "s_sc_max_mva", np.nan) * 1e6,
            "sk_min_va": _col(ext_grid, "s_sc_min_mva", np.nan) * 1e6,
            "rx_max": _col(ext_grid, "rx_max", np.nan),
            "rx_min": _col(ext_grid, "rx_min", np.nan),
            "x0x_max": _col(ext_grid, "x0x_max", np.nan),
            "r0x0_max": _col(ext_grid, "r0x0_max", np.nan),
            "x0x_min": _col(ext_grid, "x0x_min", np.nan),
            "r0x0_min": _col(ext_grid, "r0x0_min", np.nan),
            "source_index": ext_grid.index.to_numpy(),
        }

    # -- loads and storage (consumer convention) -------------------------------------------------
    load_parts = _loads(net, ids, bus_index, node_ids, bus_ok, src)
    if load_parts is not None:
        data["sym_load"], names["sym_load"], extra["sym_load"] = load_parts

    # -- generators (sgen, gen) ------------------------------------------------------------------
    gen_parts = _generators(net, ids, bus_index, node_ids, bus_ok, src)
    if gen_parts is not None:
        data["sym_gen"], names["sym_gen"], extra["sym_gen"], regulators = gen_parts
        if regulators.size:
            data["voltage_regulator"] = regulators
            names["voltage_regulator"] = names["sym_gen"][
                np.isin(data["sym_gen"]["id"], regulators["regulated_object"])
            ]

    # -- unbalanced loads and generators -----------------------------------------------------------
    for table, component, sign_name in (
        ("asymmetric_load", "asym_load", "load"),
        ("asymmetric_sgen", "asym_gen", "sgen"),
    ):
        df = net.get(table) if hasattr(net, "get") else None
        if df is None or not len(df):
            continue
        anames = _names(df, table)
        if "type" in df.columns and (df["type"] == "delta").any():
            bad = int(np.flatnonzero((df["type"] == "delta").to_numpy())[0])
            raise GridSourceError(
                src,
                "delta-connected unbalanced elements are not supported",
                element=f"{table} '{anames[bad]}'",
                field="type",
            )
        arr = empty_component(component, len(df))
        arr["id"] = ids.take(len(df))
        abus = df["bus"].to_numpy()
        arr["node"] = _bus_ids(bus_index, node_ids, abus, src, table, "bus", anames)
        in_service = _col(df, "in_service", True, bool) & bus_ok(abus)
        arr["status"] = in_service
        arr["type"] = LoadGenType.const_power
        scale = _col(df, "scaling", 1.0) * 1e6
        arr["p_specified"] = np.stack([_col(df, f"p_{ph}_mw", 0.0) * scale for ph in "abc"], axis=1)
        arr["q_specified"] = np.stack([_col(df, f"q_{ph}_mvar", 0.0) * scale for ph in "abc"], axis=1)
        data[component] = arr
        names[component] = anames
        extra[component] = {
            "in_service": in_service,
            "kind": np.full(len(df), sign_name, dtype=object),
            "source_index": df.index.to_numpy(),
        }

    # -- shunts -------------------------------------------------------------------------------------
    shunt = net.shunt
    if len(shunt):
        snames = _names(shunt, "shunt")
        arr = empty_component("shunt", len(shunt))
        arr["id"] = ids.take(len(shunt))
        sbus = shunt["bus"].to_numpy()
        arr["node"] = _bus_ids(bus_index, node_ids, sbus, src, "shunt", "bus", snames)
        in_service = _col(shunt, "in_service", True, bool) & bus_ok(sbus)
        arr["status"] = in_service
        vn2 = _col(shunt, "vn_kv", np.nan) ** 2
        step = _col(shunt, "step", 1.0)
        arr["g1"] = _col(shunt, "p_mw", 0.0) * step / vn2
        arr["b1"] = -_col(shunt, "q_mvar", 0.0) * step / vn2
        arr["g0"] = arr["g1"]
        arr["b0"] = arr["b1"]
        data["shunt"] = arr
        names["shunt"] = snames
        extra["shunt"] = {"in_service": in_service, "source_index": shunt.index.to_numpy()}

    if "voltage_regulator" in data:
        extra["voltage_regulator"] = {"in_service": data["voltage_regulator"]["status"].astype(bool)}
    # branch ends at out-of-service buses open, and one voltage set-point per electrical node,
    # as pandapower solves it (see apply_switches)
    data = apply_switches(data, sw, extra, names=names, source=src)
    sensors, sensor_names, sensor_extra = _measurements(net, ids, bus_index, node_ids, data, line, trafo, src)
    names.update(sensor_names)
    extra.update(sensor_extra)
    profiles = _profiles(net, data, extra, src)
    return Grid(
        name=name,
        input=data,
        names=names,
        extra=extra,
        switches=sw,
        switch_names=switch_names,
        switch_kinds=switch_kinds,
        node_xy=node_xy,
        sensors=sensors,
        profiles=profiles,
        frequency_hz=frequency,
    )


def _transformers(
    trafo: pd.DataFrame, trafo_ids: np.ndarray, bus_index: pd.Index, node_ids: np.ndarray, bus_ok: Any, src: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    tnames = _names(trafo, "trafo")
    n = len(trafo)
    hv = trafo["hv_bus"].to_numpy()
    lv = trafo["lv_bus"].to_numpy()
    parallel = _col(trafo, "parallel", 1.0)
    sn = _col(trafo, "sn_mva", np.nan) * 1e6
    vn_hv = _col(trafo, "vn_hv_kv", np.nan) * 1e3
    vn_lv = _col(trafo, "vn_lv_kv", np.nan) * 1e3
    arr = empty_component("transformer", n)
    arr["id"] = trafo_ids
    arr["from_node"] = _bus_ids(bus_index, node_ids, hv, src, "trafo", "hv_bus", tnames)
    arr["to_node"] = _bus_ids(bus_index, node_ids, lv, src, "trafo", "lv_bus", tnames)
    arr["u1"] = vn_hv
    arr["u2"] = vn_lv
    arr["sn"] = sn * parallel
    arr["uk"] = _col(trafo, "vk_percent", np.nan) * 1e-2
    arr["pk"] = _col(trafo, "vkr_percent", np.nan) * 1e-2 * sn * parallel
    arr["p0"] = _col(trafo, "pfe_kw", 0.0) * 1e3 * parallel
    i0 = _col(trafo, "i0_percent", 0.0) * 1e-2
    # power-grid-model requires i0 >= p0 / sn (the magnetising current carries the iron losses)
    arr["i0"] = np.maximum(i0, np.divide(arr["p0"], arr["sn"], out=np.zeros(n), where=arr["sn"] > 0))

    shift = _col(trafo, "shift_degree", 0.0)
    clock_from_shift = (np.round(shift / 30.0) % 12).astype(np.int8)
    vg_text = _col(trafo, "vector_group", None, object)
    wf, wt, clock_vg = _parse_vector_group(vg_text)
    missing = wf < 0
    if missing.any():
        wf2, wt2, clock2 = _parse_vector_group(_col(trafo, "std_type", None, object))
        wf[missing], wt[missing] = wf2[missing], wt2[missing]
        clock_vg[missing] = clock2[missing]
    still = wf < 0
    odd = (clock_from_shift % 2) == 1
    wf[still] = np.where(odd[still], WindingType.delta, WindingType.wye_n)
    wt[still] = WindingType.wye_n
    arr["winding_from"] = wf
    arr["winding_to"] = wt
    # pandapower's power flow uses shift_degree; the clock must agree with it
    arr["clock"] = clock_from_shift

    # taps: honour tap_pos whenever the tap data are there, whatever tap_changer_type says
    tap_side = _col(trafo, "tap_side", None, object)
    tap_pos = _col(trafo, "tap_pos", np.nan)
    tap_nom = _col(trafo, "tap_neutral", np.nan)
    step_pct = _col(trafo, "tap_step_percent", np.nan)
    step_deg = _col(trafo, "tap_step_degree", 0.0)
    tap_min = _col(trafo, "tap_min", np.nan)
    tap_max = _col(trafo, "tap_max", np.nan)
    changer = _col(trafo, "tap_changer_type", None, object)
    side_lv = tap_side == "lv"
    has_tap = np.isin(tap_side, ["hv", "lv"]) & ~np.isnan(tap_pos) & ~np.isnan(step_pct) & (step_pct != 0)
    tap_nom = np.where(np.isnan(tap_nom), 0.0, tap_nom)
    off_neutral = has_tap & (tap_pos != tap_nom)
    unsupported = off_neutral & ((np.nan_to_num(step_deg) != 0) | np.isin(changer, ["Symmetrical", "Ideal", "Tabular"]))
    if unsupported.any():
        bad = int(np.flatnonzero(unsupported)[0])
        raise GridSourceError(
            src,
            "phase-shifting tap changers are not supported",
            element=f"trafo '{tnames[bad]}'",
            field="tap_step_degree",
        )
    tap_size = np.where(side_lv, vn_lv, vn_hv) * step_pct * 1e-2
    negative = has_tap & (tap_size < 0)
    tap_size = np.abs(tap_size)
    lo = np.where(np.isnan(tap_min), np.minimum(tap_pos, tap_nom), tap_min)
    hi = np.where(np.isnan(tap_max), np.maximum(tap_pos, tap_nom), tap_max)
    lo, hi = np.where(negative, hi, lo), np.where(negative, lo, hi)
    arr["tap_side"] = np.where(side_lv, 1, 0)
    arr["tap_pos"] = np.where(has_tap, tap_pos, 0)
    arr["tap_nom"] = np.where(has_tap, tap_nom, 0)
    arr["tap_min"] = np.where(has_tap, lo, 0)
    arr["tap_max"] = np.where(has_tap, hi, 0)
    arr["tap_size"] = np.where(has_tap, tap_size, 0.0)

    # zero sequence (unbalanced studies) as pandapower defines it
    vk = _col(trafo, "vk_percent", np.nan)
    mag0 = _col(trafo, "mag0_percent", np.nan)
    mag0_rx = _col(trafo, "mag0_rx", np.nan)
    ok0 = ~np.isnan(mag0) & ~np.isnan(mag0_rx) & (mag0_rx != 0) & (mag0 != 0)
    i0_zero = np.divide(1.0, vk * mag0 * 1e-4, out=np.full(n, np.nan), where=ok0)
    p0_zero = (
        np.divide(
            i0_zero,
            np.sqrt(1 + np.divide(1.0, mag0_rx, out=np.ones(n), where=ok0) ** 2),
            out=np.full(n, np.nan),
            where=ok0,
        )
        * sn
        * parallel
    )
    # For Dyn/YNd units pandapower uses a zero-sequence T-model (leakage split by si0_hv_partial,
    # magnetising impedance in the middle); power-grid-model puts the magnetising admittance in
    # parallel with the series impedance, so the equivalent admittance is the difference.
    i0_t, p0_t = _zero_sequence_magnetising(
        vk,
        _col(trafo, "vkr_percent", np.nan),
        _col(trafo, "vk0_percent", np.nan),
        _col(trafo, "vkr0_percent", np.nan),
        mag0,
        mag0_rx,
        _col(trafo, "si0_hv_partial", np.nan),
        hv_is_delta=wf == WindingType.delta,
    )
    t_model = np.isfinite(i0_t) & (
        ((wf == WindingType.delta) & (wt == WindingType.wye_n))
        | ((wf == WindingType.wye_n) & (wt == WindingType.delta))
    )
    arr["i0_zero_sequence"] = np.where(t_model, i0_t, i0_zero)
    arr["p0_zero_sequence"] = np.where(t_model, p0_t * sn * parallel, p0_zero)
    in_service = _col(trafo, "in_service", True, bool)
    extra = {
        "in_service": in_service,
        "source_index": trafo.index.to_numpy(),
        "std_type": _col(trafo, "std_type", None, object),
        "vector_group_clock": clock_vg,
        "auto_tap": _col(trafo, "autoTap", 0.0),
    }
    return arr, tnames, extra


def _zero_sequence_magnetising(
    vk: np.ndarray,
    vkr: np.ndarray,
    vk0: np.ndarray,
    vkr0: np.ndarray,
    mag0: np.ndarray,
    mag0_rx: np.ndarray,
    si0_hv: np.ndarray,
    *,
    hv_is_delta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return power-grid-model's (i0_zero_sequence, p0_zero_sequence / sn) for pandapower's zero-sequence T-model.

    The earthed side sees its own part of the leakage impedance in series with the other part in
    parallel with the magnetising impedance; power-grid-model places a magnetising admittance in
    parallel with the full series impedance, so that admittance is the difference of the two. NaN
    where the data are missing or the difference is not a passive inductive admittance.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        vk, vkr, vk0, vkr0 = vk / 100, vkr / 100, vk0 / 100, vkr0 / 100
        z1 = vkr + 1j * np.sqrt(vk**2 - vkr**2)
        zsc0 = vkr0 + 1j * np.sqrt(vk0**2 - vkr0**2)
        xm = vk0 * mag0 / 100 / np.sqrt(mag0_rx**2 + 1)
        zm = xm * mag0_rx + 1j * xm
        z_hv, z_lv = si0_hv * zsc0, (1 - si0_hv) * zsc0
        near, far = np.where(hv_is_delta, z_lv, z_hv), np.where(hv_is_delta, z_hv, z_lv)
        z_earthed = near + far * zm / (far + zm)
        y_mag0 = 1 / z_earthed - 1 / z1
        ok = np.isfinite(y_mag0) & (y_mag0.real >= 0) & (y_mag0.imag <= 0)
    return np.where(ok, np.abs(y_mag0), np.nan), np.where(ok, y_mag0.real, np.nan)


def _three_winding_short_circuit(
    sn: list[np.ndarray], *, vk: list[np.ndarray], vkr: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return power-grid-model's ([uk_12, uk_13, uk_23], [pk_12, pk_13, pk_23]) for pandapower's star model.

    pandapower gives the pairwise short-circuit voltages ``vk_hv`` (hv-mv), ``vk_mv`` (mv-lv)
    and ``vk_lv`` (hv-lv), each on the smaller rating of its pair. It splits each pair into
    resistance and reactance, turns both into a star separately, and recombines them per
    winding. power-grid-model turns the pairwise magnitudes into a star and only then splits off
    the resistance, which is a different star unless every pair has the same R/X ratio. Feeding
    power-grid-model the pair sums of pandapower's star (``uk_12 = z_1 + z_2`` and ``pk_12`` from
    ``r_1 + r_2``, on the smaller rating of the pair as power-grid-model expects) makes its star
    pandapower's: the star of pair sums gives back the star elements. A negative star
    reactance keeps its sign on the magnitude, as pandapower does.
    """
    s1 = sn[0]
    pairs = ((0, 1), (1, 2), (0, 2))  # vk_hv, vk_mv, vk_lv
    base = [np.minimum(sn[a], sn[b]) for a, b in pairs]
    with np.errstate(invalid="ignore"):
        z = [vk[k] * s1 / base[k] for k in range(3)]  # pair impedances on base sn_hv
        r = [vkr[k] * s1 / base[k] for k in range(3)]
        x = [np.sqrt(z[k] ** 2 - r[k] ** 2) for k in range(3)]
    # star elements hv, mv, lv on base sn_hv (pair order: hv-mv, mv-lv, hv-lv)
    r_star = [(r[0] + r[2] - r[1]) / 2, (r[1] + r[0] - r[2]) / 2, (r[2] + r[1] - r[0]) / 2]
    x_star = [(x[0] + x[2] - x[1]) / 2, (x[1] + x[0] - x[2]) / 2, (x[2] + x[1] - x[0]) / 2]
    z_star = [np.sign(x_star[k]) * np.hypot(r_star[k], x_star[k]) for k in range(3)]
    # power-grid-model's pairs 12, 13, 23 in pandapower's pair order 0, 2, 1
    uk, pk = [], []
    for a, b, k in ((0, 1, 0), (0, 2, 2), (1, 2, 1)):
        uk.append((z_star[a] + z_star[b]) * base[k] / s1)
        pk.append((r_star[a] + r_star[b]) * base[k] ** 2 / s1)
    return uk, pk


def _three_winding(
    t3: pd.DataFrame, t3_ids: np.ndarray, bus_index: pd.Index, node_ids: np.ndarray, bus_ok: Any, src: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    tnames = _names(t3, "trafo3w")
    n = len(t3)
    arr = empty_component("three_winding_transformer", n)
    arr["id"] = t3_ids
    buses = [t3[c].to_numpy() for c in ("hv_bus", "mv_bus", "lv_bus")]
    for k, (col, values) in enumerate(zip(("hv_bus", "mv_bus", "lv_bus"), buses, strict=True), start=1):
        arr[f"node_{k}"] = _bus_ids(bus_index, node_ids, values, src, "trafo3w", col, tnames)
    in_service = _col(t3, "in_service", True, bool)
    for k in (1, 2, 3):
        arr[f"status_{k}"] = in_service & bus_ok(buses[k - 1])
    vn = [_col(t3, f"vn_{s}_kv", np.nan) * 1e3 for s in ("hv", "mv", "lv")]
    sn = [_col(t3, f"sn_{s}_mva", np.nan) * 1e6 for s in ("hv", "mv", "lv")]
    arr["u1"], arr["u2"], arr["u3"] = vn
    arr["sn_1"], arr["sn_2"], arr["sn_3"] = sn
    uk, pk = _three_winding_short_circuit(
        sn,
        vk=[_col(t3, f"vk_{s}_percent", np.nan) * 1e-2 for s in ("hv", "mv", "lv")],
        vkr=[_col(t3, f"vkr_{s}_percent", np.nan) * 1e-2 for s in ("hv", "mv", "lv")],
    )
    arr["uk_12"], arr["uk_13"], arr["uk_23"] = uk
    arr["pk_12"], arr["pk_13"], arr["pk_23"] = pk
    arr["p0"] = _col(t3, "pfe_kw", 0.0) * 1e3
    arr["i0"] = np.maximum(_col(t3, "i0_percent", 0.0) * 1e-2, np.divide(arr["p0"], sn[0]))
    shift_mv = _col(t3, "shift_mv_degree", 0.0)
    shift_lv = _col(t3, "shift_lv_degree", 0.0)
    arr["clock_12"] = (np.round(shift_mv / 30.0) % 12).astype(np.int8)
    arr["clock_13"] = (np.round(shift_lv / 30.0) % 12).astype(np.int8)
    vg = _col(t3, "vector_group", None, object)
    w1 = np.full(n, WindingType.wye_n, dtype=np.int8)
    w2 = np.where(arr["clock_12"] % 2 == 1, WindingType.delta, WindingType.wye_n).astype(np.int8)
    w3 = np.where(arr["clock_13"] % 2 == 1, WindingType.delta, WindingType.wye_n).astype(np.int8)
    for i, text in enumerate(vg):
        if isinstance(text, str):
            match = re.fullmatch(r"(YN|Y|D)(yn|y|d)\d*(yn|y|d)\d*", text.strip())
            if match:
                w1[i] = _WINDING[match.group(1)]
                w2[i] = _WINDING[match.group(2).upper()]
                w3[i] = _WINDING[match.group(3).upper()]
    arr["winding_1"], arr["winding_2"], arr["winding_3"] = w1, w2, w3
    tap_side = _col(t3, "tap_side", None, object)
    tap_pos = _col(t3, "tap_pos", np.nan)
    step_pct = _col(t3, "tap_step_percent", np.nan)
    tap_nom = np.nan_to_num(_col(t3, "tap_neutral", 0.0))
    side_index = np.select([tap_side == "hv", tap_side == "mv", tap_side == "lv"], [0, 1, 2], -1)
    has_tap = (side_index >= 0) & ~np.isnan(tap_pos) & ~np.isnan(step_pct) & (step_pct != 0)
    vn_side = np.choose(np.clip(side_index, 0, 2), vn)
    arr["tap_side"] = np.clip(side_index, 0, 2)
    arr["tap_pos"] = np.where(has_tap, tap_pos, 0)
    arr["tap_nom"] = np.where(has_tap, tap_nom, 0)
    arr["tap_min"] = np.where(has_tap, np.nan_to_num(_col(t3, "tap_min", 0.0)), 0)
    arr["tap_max"] = np.where(has_tap, np.nan_to_num(_col(t3, "tap_max", 0.0)), 0)
    arr["tap_size"] = np.where(has_tap, np.abs(vn_side * step_pct * 1e-2), 0.0)
    return arr, tnames, {"in_service": in_service, "source_index": t3.index.to_numpy()}


def _loads(
    net: Any, ids: _Ids, bus_index: pd.Index, node_ids: np.ndarray, bus_ok: Any, src: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None:
    """Loads (split into constant power, current and impedance parts where pandapower has them) and storage."""
    parts: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    load = net.load
    if len(load):
        lnames = _names(load, "load")
        lbus = load["bus"].to_numpy()
        nodes = _bus_ids(bus_index, node_ids, lbus, src, "load", "bus", lnames)
        in_service = _col(load, "in_service", True, bool) & bus_ok(lbus)
        scaling = _col(load, "scaling", 1.0)
        p = _col(load, "p_mw", np.nan) * scaling * 1e6
        q = _col(load, "q_mvar", 0.0) * scaling * 1e6
        zp, ip = (
            _col(load, "const_z_p_percent", _col(load, "const_z_percent", 0.0)),
            _col(load, "const_i_p_percent", _col(load, "const_i_percent", 0.0)),
        )
        zq, iq = (
            _col(load, "const_z_q_percent", _col(load, "const_z_percent", 0.0)),
            _col(load, "const_i_q_percent", _col(load, "const_i_percent", 0.0)),
        )
        profile = _col(load, "profile", None, object)
        for kind, fp, fq, type_ in (
            ("const_power", 1 - (zp + ip) / 100, 1 - (zq + iq) / 100, LoadGenType.const_power),
            ("const_current", ip / 100, iq / 100, LoadGenType.const_current),
            ("const_impedance", zp / 100, zq / 100, LoadGenType.const_impedance),
        ):
            sel = np.ones(len(load), bool) if kind == "const_power" else ((fp != 0) | (fq != 0))
            if not sel.any():
                continue
            arr = empty_component("sym_load", int(sel.sum()))
            arr["node"] = nodes[sel]
            arr["status"] = in_service[sel]
            arr["type"] = type_
            arr["p_specified"] = (p * fp)[sel]
            arr["q_specified"] = (q * fq)[sel]
            parts.append(
                (
                    arr,
                    lnames[sel],
                    {
                        "in_service": in_service[sel],
                        "kind": np.full(arr.size, "load", dtype=object),
                        "source_table": np.full(arr.size, "load", dtype=object),
                        "source_index": load.index.to_numpy()[sel],
                        "profile": profile[sel],
                        "p_fraction": fp[sel],
                        "q_fraction": fq[sel],
                        "scaling": scaling[sel],
                        **({"customers": _col(load, "customers", np.nan)[sel]} if "customers" in load.columns else {}),
                    },
                )
            )
    storage = net.get("storage") if hasattr(net, "get") else None
    if storage is not None and len(storage):
        snames = _names(storage, "storage")
        sbus = storage["bus"].to_numpy()
        arr = empty_component("sym_load", len(storage))
        arr["node"] = _bus_ids(bus_index, node_ids, sbus, src, "storage", "bus", snames)
        in_service = _col(storage, "in_service", True, bool) & bus_ok(sbus)
        scaling = _col(storage, "scaling", 1.0)
        arr["status"] = in_service
        arr["type"] = LoadGenType.const_power
        arr["p_specified"] = _col(storage, "p_mw", 0.0) * scaling * 1e6
        arr["q_specified"] = _col(storage, "q_mvar", 0.0) * scaling * 1e6
        parts.append(
            (
                arr,
                snames,
                {
                    "in_service": in_service,
                    "kind": np.full(arr.size, "storage", dtype=object),
                    "source_table": np.full(arr.size, "storage", dtype=object),
                    "source_index": storage.index.to_numpy(),
                    "profile": _col(storage, "profile", None, object),
                    "p_fraction": np.ones(arr.size),
                    "q_fraction": np.ones(arr.size),
                    "scaling": scaling,
                    "max_e_mwh": _col(storage, "max_e_mwh", np.nan),
                },
            )
        )
    if not parts:
        return None
    arr = np.concatenate([p[0] for p in parts])
    arr["id"] = ids.take(arr.size)
    keys = {k for p in parts for k in p[2]}
    extra = {
        k: np.concatenate([p[2].get(k, np.full(p[0].size, np.nan if k == "max_e_mwh" else None)) for p in parts])
        for k in keys
    }
    return arr, np.concatenate([p[1] for p in parts]), extra


def _generators(
    net: Any, ids: _Ids, bus_index: pd.Index, node_ids: np.ndarray, bus_ok: Any, src: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray] | None:
    """Static generators and voltage-controlled generators (with a voltage regulator each)."""
    parts: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    gen_u_ref: list[np.ndarray] = []
    for table in ("sgen", "gen"):
        df = net.get(table) if hasattr(net, "get") else None
        if df is None or not len(df):
            continue
        gnames = _names(df, table)
        gbus = df["bus"].to_numpy()
        arr = empty_component("sym_gen", len(df))
        arr["node"] = _bus_ids(bus_index, node_ids, gbus, src, table, "bus", gnames)
        in_service = _col(df, "in_service", True, bool) & bus_ok(gbus)
        scaling = _col(df, "scaling", 1.0)
        arr["status"] = in_service
        arr["type"] = LoadGenType.const_power
        arr["p_specified"] = _col(df, "p_mw", 0.0) * scaling * 1e6
        arr["q_specified"] = _col(df, "q_mvar", 0.0) * scaling * 1e6 if table == "sgen" else 0.0
        gtype = _col(df, "type", None, object)
        kind = _generator_kinds(gtype)
        parts.append(
            (
                arr,
                gnames,
                {
                    "in_service": in_service,
                    "kind": kind,
                    "source_table": np.full(len(df), table, dtype=object),
                    "source_index": df.index.to_numpy(),
                    "profile": _col(df, "profile", None, object),
                    "scaling": scaling,
                    "sn_va": _col(df, "sn_mva", np.nan) * 1e6,
                },
            )
        )
        gen_u_ref.append(_col(df, "vm_pu", 1.0) if table == "gen" else np.full(len(df), np.nan))
    if not parts:
        return None
    arr = np.concatenate([p[0] for p in parts])
    arr["id"] = ids.take(arr.size)
    extra = {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]}
    u_ref = np.concatenate(gen_u_ref)
    is_gen = extra["source_table"] == "gen"
    regulators = empty_component("voltage_regulator", int(is_gen.sum()))
    if regulators.size:
        regulators["id"] = ids.take(regulators.size)
        regulators["regulated_object"] = arr["id"][is_gen]
        regulators["status"] = arr["status"][is_gen]
        regulators["u_ref"] = u_ref[is_gen]
    return arr, np.concatenate([p[1] for p in parts]), extra, regulators


def _generator_kinds(types: np.ndarray) -> npt.NDArray[np.object_]:
    """Classify generator types, once per distinct type."""
    text = np.array([t if isinstance(t, str) else "" for t in types], dtype=object)
    unique, inverse = np.unique(text.astype(str), return_inverse=True)
    kinds = np.array([_generator_kind(t if t else None) for t in unique], dtype=object)
    return kinds[inverse] if text.size else np.zeros(0, dtype=object)


def _generator_kind(value: Any) -> str:
    """Classify a pandapower/SimBench generator type."""
    if not isinstance(value, str):
        return "generator"
    text = value.lower()
    for key, kind in (
        ("pv", "pv"),
        ("wind", "wind"),
        ("wp", "wind"),
        ("hydro", "hydro"),
        ("biomass", "biomass"),
        ("chp", "chp"),
        ("res", "res"),
    ):
        if key in text:
            return kind
    return text


def _measurements(
    net: Any,
    ids: _Ids,
    bus_index: pd.Index,
    node_ids: np.ndarray,
    data: dict[str, np.ndarray],
    line: pd.DataFrame,
    trafo: pd.DataFrame,
    src: str,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Measurement placements from pandapower's measurement table (values NaN where not given)."""
    meas = net.get("measurement") if hasattr(net, "get") else None
    sensors: dict[str, np.ndarray] = {}
    names: dict[str, np.ndarray] = {}
    extra: dict[str, dict[str, np.ndarray]] = {}
    if meas is None or not len(meas):
        return sensors, names, extra
    mnames = _names(meas, "measurement")
    mtype = meas["measurement_type"].to_numpy(dtype=object)
    etype = meas["element_type"].to_numpy(dtype=object)
    element = meas["element"].to_numpy()
    value = _col(meas, "value", np.nan)
    std = _col(meas, "std_dev", np.nan)
    side = _col(meas, "side", None, object)

    # voltage sensors on nodes
    sel = (mtype == "v") & (etype == "bus")
    if sel.any():
        nodes = _bus_ids(bus_index, node_ids, element[sel], src, "measurement", "element", mnames[sel])
        u_rated = data["node"]["u_rated"][bus_index.get_indexer(element[sel])]
        arr = empty_component("sym_voltage_sensor", int(sel.sum()))
        arr["id"] = ids.take(arr.size)
        arr["measured_object"] = nodes
        arr["u_sigma"] = np.where(np.isnan(std[sel]), 0.01, std[sel]) * u_rated
        arr["u_measured"] = value[sel] * u_rated
        sensors["sym_voltage_sensor"] = arr
        names["sym_voltage_sensor"] = mnames[sel]

    # branch power and current sensors: one power sensor per (branch, end) holding p and q
    sel = np.flatnonzero(np.isin(etype, ["line", "trafo"]) & np.isin(mtype, ["p", "q", "i"]))
    if not sel.size:
        return sensors, names, extra
    branch = np.zeros(sel.size, dtype=np.int64)
    end = np.zeros(sel.size, dtype=np.int8)
    for kind, table, component, from_col in (
        ("line", line, "line", "from_bus"),
        ("trafo", trafo, "transformer", "hv_bus"),
    ):
        on = etype[sel] == kind
        if not on.any():
            continue
        rows = sel[on]
        pos = table.index.get_indexer(pd.Index(element[rows]))
        if (pos < 0).any():
            bad = rows[np.flatnonzero(pos < 0)[0]]
            raise GridSourceError(
                src,
                f"refers to {kind} {element[bad]}, which does not exist",
                element=f"measurement '{mnames[bad]}'",
                field="element",
            )
        branch[on] = data[component]["id"][pos]
        s = side[rows]
        named_from = np.isin(s, ["from", "hv"])
        named_to = np.isin(s, ["to", "lv"])
        by_bus = ~(named_from | named_to)
        bus_side = pd.to_numeric(pd.Series(s[by_bus], dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(bus_side).any():
            bad = rows[np.flatnonzero(by_bus)[np.flatnonzero(np.isnan(bus_side))[0]]]
            raise GridSourceError(
                src, f"unknown measurement side {side[bad]!r}", element=f"measurement '{mnames[bad]}'", field="side"
            )
        at_from = named_from.copy()
        at_from[by_bus] = bus_side == table[from_col].to_numpy()[pos[by_bus]]
        end[on] = np.where(at_from, 0, 1)
    terminal = np.where(end == 0, MeasuredTerminalType.branch_from, MeasuredTerminalType.branch_to)

    is_current = mtype[sel] == "i"
    power = ~is_current
    if power.any():
        # one sensor per (branch, end); the first measurement there names it
        key = branch[power] * 2 + end[power]
        keys, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        arr = empty_component("sym_power_sensor", keys.size)
        arr["id"] = ids.take(arr.size)
        arr["measured_object"] = keys // 2
        arr["measured_terminal_type"] = terminal[power][first]
        rows = sel[power]
        has: dict[str, np.ndarray] = {}
        for q, col, sig in (("p", "p_measured", "p_sigma"), ("q", "q_measured", "q_sigma")):
            mine = mtype[rows] == q
            measured = np.full(keys.size, np.nan)
            sigma = np.full(keys.size, np.nan)
            # the last measurement of a quantity at an end wins, as a dict update would
            measured[inverse[mine]] = value[rows[mine]] * 1e6
            sigma[inverse[mine]] = std[rows[mine]] * 1e6
            arr[col], arr[sig] = measured, sigma
            has[q] = np.zeros(keys.size, dtype=bool)
            has[q][inverse[mine]] = True
        sensors["sym_power_sensor"] = arr
        names["sym_power_sensor"] = mnames[rows][first]
        extra["sym_power_sensor"] = {"has_p": has["p"], "has_q": has["q"]}
    if is_current.any():
        rows = sel[is_current]
        arr = empty_component("sym_current_sensor", rows.size)
        arr["id"] = ids.take(arr.size)
        arr["measured_object"] = branch[is_current]
        arr["measured_terminal_type"] = terminal[is_current]
        arr["angle_measurement_type"] = 0  # local angle
        arr["i_measured"] = value[rows] * 1e3
        arr["i_sigma"] = std[rows] * 1e3
        arr["i_angle_sigma"] = np.pi
        arr["i_angle_measured"] = 0.0
        sensors["sym_current_sensor"] = arr
        names["sym_current_sensor"] = mnames[rows]
    return sensors, names, extra


def _profiles(
    net: Any, data: dict[str, np.ndarray], extra: dict[str, dict[str, np.ndarray]], src: str
) -> Profiles | None:
    """SimBench-style relative profiles (``net.profiles``) assigned to loads, storage and generators."""
    raw = getattr(net, "profiles", None) if not hasattr(net, "get") else net.get("profiles")
    if not isinstance(raw, dict) or not raw:
        return None
    frames = [df for df in raw.values() if isinstance(df, pd.DataFrame) and len(df)]
    if not frames:
        return None
    time_text = frames[0]["time"]
    time = pd.to_datetime(time_text, format="%d.%m.%Y %H:%M", errors="coerce", utc=True)
    if time.isna().any():
        time = pd.to_datetime(time_text, errors="coerce", utc=True)
    columns: list[str] = []
    blocks: list[np.ndarray] = []
    for df in frames:
        if len(df) != len(time_text):
            raise GridSourceError(src, "profile tables have different lengths", element="profiles")
        cols = [c for c in df.columns if c != "time" and c not in columns]
        columns.extend(cols)
        blocks.append(df[cols].to_numpy(dtype=np.float64))
    values = np.ascontiguousarray(np.concatenate(blocks, axis=1))
    col_index = {c: i for i, c in enumerate(columns)}

    def lookup(profile: np.ndarray, suffix: str) -> np.ndarray:
        return np.array(
            [col_index.get(f"{p}{suffix}", -1) if isinstance(p, str) else -1 for p in profile], dtype=np.int64
        )

    assignments: list[ProfileAssignment] = []
    if "sym_load" in data:
        loads = data["sym_load"]
        ex = extra["sym_load"]
        is_load = ex["kind"] == "load"
        col_p = np.where(is_load, lookup(ex["profile"], "_pload"), lookup(ex["profile"], ""))
        col_q = np.where(is_load, lookup(ex["profile"], "_qload"), -1)
        assignments.append(
            ProfileAssignment("sym_load", "p_specified", loads["id"], col_p, loads["p_specified"].copy())
        )
        assignments.append(
            ProfileAssignment("sym_load", "q_specified", loads["id"], col_q, loads["q_specified"].copy())
        )
    if "sym_gen" in data:
        gens = data["sym_gen"]
        col_p = lookup(extra["sym_gen"]["profile"], "")
        assignments.append(ProfileAssignment("sym_gen", "p_specified", gens["id"], col_p, gens["p_specified"].copy()))
    if not assignments:
        return None
    return Profiles(
        time=time.to_numpy(dtype="datetime64[s]") if hasattr(time, "to_numpy") else np.asarray(time),
        values=values,
        columns=tuple(columns),
        assignments=tuple(assignments),
    )

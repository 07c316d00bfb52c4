"""Read an OpenDSS circuit into an OpenDSO :class:`~opendso.grid.model.Grid`.

The OpenDSS engine itself (opendssdirect.py, in a private engine context) compiles the master
file, so ``Redirect``/``Compile`` of sub-files, ``LineCode``/``LineGeometry`` objects, units,
``~`` continuations and in-line math are handled exactly as OpenDSS handles them; this module
only reads the compiled elements back. A compile error becomes a
:class:`~opendso.errors.GridSourceError` naming the file, the line and the element the engine
names.

How each OpenDSS element becomes a power-grid-model component, and why:

- **Buses** become nodes. ``u_rated`` is the bus voltage base (``Set VoltageBases`` followed by
  ``CalcVoltageBases``) as a line-to-line voltage; a bus without a base is an error, because
  per-unit results would otherwise be meaningless. ``Buscoords`` fill ``grid.node_xy``. The
  phases a bus really has are kept in ``extra["node"]["phases"]`` (``"abc"``, ``"b"``...):
  power-grid-model nodes always have three phases.
- **Vsource** becomes a ``source`` with the Vsource's own Thevenin impedance, because OpenDSS
  solves with that impedance (it is not an ideal source): ``sk`` is chosen so that the ohmic
  positive-sequence impedance is exactly the Vsource's ``Z1`` at the node's rated voltage,
  ``rx_ratio = R1/X1`` and ``z01_ratio = |Z0|/|Z1|`` (power-grid-model gives ``Z0`` the angle of
  ``Z1``; OpenDSS keeps ``X0/R0`` separately: exact when ``X0/R0 = X1/R1`` or when the source
  feeds a delta winding). ``u_ref`` is the Vsource's ``pu`` times its ``basekV`` over the node's
  rated voltage. ``extra["source"]`` carries ``sk_max_va`` (``MVAsc3``), ``sk1_va``
  (``MVAsc1``), ``rx_max``/``rx_min`` and ``z01_ratio`` for short-circuit studies.
- **Line** elements are read from the engine's primitive admittance matrix ``YPrim`` (so line
  codes, geometries, units and lengths are already applied): series impedance
  ``Z = -inv(Y_ft)`` and shunt capacitance from ``Y_ff + Y_ft``. A three-phase line whose
  matrices are balanced (equal diagonals, equal off-diagonals) becomes a ``line`` with the
  exactly equivalent sequence data; any other line (untransposed, one- or two-phase) becomes an
  ``asym_line`` with the full phase matrices. A phase the line does not have gets a series
  resistance of :data:`ABSENT_PHASE_OHM` and no capacitance: no current flows in it (nothing is
  connected to the absent phase downstream), so the voltages of the phases that exist are
  exact, while the absent phase of the downstream node merely follows the upstream node.
- **Line with ``Switch=y``** stays a line with the engine's switch impedance (OpenDSS gives a
  switch about 1 mOhm + j1 mOhm, which is not zero at LV) and gets a row in ``grid.switches``
  acting on its from end; an opened terminal (``Open Line.x 1``) opens the switch. An opened
  terminal of an ordinary line is recorded the same way, with switch kind ``terminal``.
- **Transformer** (two windings, three phases) becomes a ``transformer``: ``u1``/``u2`` the
  winding kV, ``sn`` the first winding's kVA, ``uk`` from ``XHL`` and the winding ``%R``,
  ``pk`` from the winding ``%R``. OpenDSS connects the magnetising branch (``%imag``,
  ``%noloadloss``) across winding 2, where power-grid-model's ``i0``/``p0`` would split it
  between both ends (1.3e-4 p.u. apart at LV for ``%imag=0.4``); so ``i0 = p0 = 0`` and the
  magnetising branch is a ``shunt`` of the same name at winding 2's node (``kind`` =
  ``transformer magnetising``; no zero-sequence admittance when winding 2 is delta). Wye
  windings are earthed (``wye_n``: OpenDSS earths the star point through the bus's node 0
  unless told otherwise); a delta-wye pair has clock 1 (OpenDSS's default
  ANSI "lag") or 11 (``LeadLag=lead``/``euro``). A tap off 1.0 on one winding becomes a
  power-grid-model tap on that side with OpenDSS's step size (``(MaxTap-MinTap)/NumTaps``);
  taps on both windings are not supported.
- **Load**: ``model=1`` (constant P, Q), ``model=2`` (constant impedance) and ``model=5``
  (constant current magnitude) become constant power / impedance / current loads, referred to
  the node's voltage base. A three-phase load becomes a ``sym_load``; a one- or two-phase
  load connected phase-to-earth becomes an ``asym_load`` on its phases. A three-phase delta
  load is kept as a ``sym_load`` (exact in balanced calculations; in unbalanced ones
  power-grid-model treats it as wye) and flagged in ``extra["sym_load"]["connection"]``; a
  phase-to-phase single-phase load is an error. OpenDSS switches every load to constant
  impedance when its voltage leaves ``[Vminpu, Vmaxpu]`` (0.95-1.05 by default); OpenDSO keeps
  the declared model at every voltage. The limits are kept in ``extra[...]["vmin_pu"]`` and
  ``["vmax_pu"]`` so a study can flag loads that OpenDSS would have switched; widen the limits
  in the .dss (``vminpu=0.8 vmaxpu=1.2``) to make both tools solve the same case. ``LoadMult``
  of the circuit scales loads whose status is not ``fixed``.
- **PVSystem** and **Generator** (``model=1``) become ``sym_gen`` (three-phase) or
  ``asym_gen`` (fewer phases) with the active and reactive power the engine reports for them
  (``Pmpp`` times irradiance, limited by ``kVA``, for a PV system). Generators of other models
  (voltage-controlled and so on) are errors.
- **Capacitor** (three-phase) becomes a ``shunt`` with the susceptance of its switched-in
  steps at its rated kV; a delta bank has no zero-sequence admittance.
- Control elements (``RegControl``, ``CapControl``, ...) are ignored with a log message: the
  taps and steps are imported as they stand. Energy meters and monitors are ignored. Any other
  power-carrying element (``Reactor``, ``Storage``, ``Isource``...) is an error naming it.

Ids are consecutive from 0: nodes first (in the engine's bus order), then lines, transformers,
sources, loads, generators, shunts and switches, so the same file always gives the same ids.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import LoadGenType, WindingType

from opendso.errors import GridSourceError
from opendso.grid.model import SIDE_FROM, SIDE_TO, SWITCH_DTYPE, Grid, apply_switches, empty_component

log = logging.getLogger(__name__)

#: Series resistance (ohm) given to a phase a one- or two-phase line does not have.
ABSENT_PHASE_OHM = 1e6

#: Relative tolerance below which a three-phase line's matrices count as balanced.
BALANCED_RTOL = 1e-9

_SUPPORTED = {"vsource", "line", "transformer", "load", "pvsystem", "generator", "capacitor"}
_IGNORED = {"energymeter", "monitor", "sensor"}
_CONTROLS = {
    "regcontrol",
    "capcontrol",
    "swtcontrol",
    "invcontrol",
    "expcontrol",
    "storagecontroller",
    "relay",
    "recloser",
    "fuse",
    "genericcontrol",
    "upfccontrol",
    "esppvcontrol",
}
_LOAD_TYPES = {1: LoadGenType.const_power, 2: LoadGenType.const_impedance, 5: LoadGenType.const_current}
_LOAD_EXPONENT = {1: 0.0, 2: 2.0, 5: 1.0}
_ENGINE_WHERE = re.compile(r'\[file:\s*"([^"]*)",\s*line:\s*(\d+)\]')
_OBJECT_QUOTED = re.compile(r'object "([^"]+)"', re.IGNORECASE)
_OBJECT_PREFIX = re.compile(r"^\s*([A-Za-z_]\w*\.[^.\s:\"]+)")
_OBJECT_NEW = re.compile(r"\bNew\s+(?:object=)?([A-Za-z_]\w*\.[^\s\"]+)", re.IGNORECASE)


@dataclass
class _Table:
    """Rows of one output component, collected element by element, stacked at the end."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, row: dict[str, Any], extra: dict[str, Any]) -> None:
        self.rows.append(row)
        self.names.append(name)
        self.extra.append(extra)

    def build(self, component: str, first_id: int) -> tuple[np.ndarray, npt.NDArray[np.object_], dict[str, np.ndarray]]:
        arr = empty_component(component, len(self.rows))
        arr["id"] = np.arange(first_id, first_id + len(self.rows), dtype=np.int32)
        for key in {k for row in self.rows for k in row}:
            arr[key] = np.array([row[key] for row in self.rows])
        extra = {k: _column([e.get(k) for e in self.extra]) for k in {k for e in self.extra for k in e}}
        return arr, np.array(self.names, dtype=object), extra


def _column(values: list[Any]) -> np.ndarray:
    """An extra column: numeric or boolean where every value is, else object."""
    if all(isinstance(v, bool | np.bool_) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array(values, dtype=object)


def read_opendss(path: Path, source: str) -> Grid:
    """Return the grid of an OpenDSS circuit compiled from its master file ``path``.

    ``source`` is the source string used in error messages (``opendss:<master.dss>``). Raises
    :class:`~opendso.errors.GridSourceError` for a missing file, a file the engine cannot
    compile (naming the file, line and element the engine names) and for elements OpenDSO
    cannot represent (naming the element and field). See the module docstring for the model.
    """
    path = Path(path)
    if not path.is_file():
        raise GridSourceError(source, f"file not found: {path}")
    dss = _compile(path, source)
    _check_classes(dss, source)
    frequency = float(dss.Solution.Frequency())

    # -- buses -----------------------------------------------------------------------------------
    if not dss.Circuit.NumBuses():
        dss.Text.Command("MakeBusList")  # the engine builds its bus list lazily
    bus_names = [str(b) for b in dss.Circuit.AllBusNames()]
    nb = len(bus_names)
    if nb == 0:
        raise GridSourceError(source, "the circuit has no buses")
    kv_base = np.zeros(nb)
    xy = np.full((nb, 2), np.nan)
    phases = np.empty(nb, dtype=object)
    for i in range(nb):
        dss.Circuit.SetActiveBusi(i)
        kv_base[i] = dss.Bus.kVBase()
        nodes = {int(n) for n in dss.Bus.Nodes()}
        phases[i] = "".join(p for k, p in ((1, "a"), (2, "b"), (3, "c")) if k in nodes)
        if dss.Bus.Coorddefined():
            xy[i] = (dss.Bus.X(), dss.Bus.Y())
    if (kv_base <= 0).any():
        bad = bus_names[int(np.flatnonzero(kv_base <= 0)[0])]
        raise GridSourceError(
            source,
            "bus has no voltage base; add `Set VoltageBases=[...]` and `CalcVoltageBases` to the circuit",
            element=f"bus {bad}",
        )
    bus_index = {name: i for i, name in enumerate(bus_names)}
    u_rated = kv_base * math.sqrt(3.0) * 1e3
    node = empty_component("node", nb)
    node["id"] = np.arange(nb, dtype=np.int32)
    node["u_rated"] = u_rated
    reader = _Reader(dss, source, bus_index, u_rated, frequency)

    # -- elements --------------------------------------------------------------------------------
    reader.read_lines()
    reader.read_transformers()
    reader.read_vsources()
    reader.read_loads()
    reader.read_generators()
    reader.read_capacitors()

    data: dict[str, np.ndarray] = {"node": node}
    names: dict[str, np.ndarray] = {"node": np.array(bus_names, dtype=object)}
    extra: dict[str, dict[str, np.ndarray]] = {
        "node": {"in_service": np.ones(nb, dtype=bool), "phases": phases, "kv_base_ln": kv_base},
    }
    next_id = nb
    row_of: dict[str, tuple[str, int]] = {}
    for component in (
        "line",
        "asym_line",
        "transformer",
        "source",
        "sym_load",
        "asym_load",
        "sym_gen",
        "asym_gen",
        "shunt",
    ):
        table = reader.tables.get(component)
        if table is None or not table.rows:
            continue
        data[component], names[component], extra[component] = table.build(component, next_id)
        for k, name in enumerate(table.names):
            row_of[name] = (component, next_id + k)
        next_id += len(table.rows)

    switches = np.zeros(len(reader.switches), dtype=SWITCH_DTYPE)
    if reader.switches:
        switches["id"] = np.arange(next_id, next_id + len(reader.switches), dtype=np.int32)
        for k, (line_name, side, closed, _kind) in enumerate(reader.switches):
            component, element_id = row_of[line_name]
            array = data[component]
            row = int(np.flatnonzero(array["id"] == element_id)[0])
            switches["element"][k] = element_id
            switches["side"][k] = side
            switches["node"][k] = array["from_node" if side == SIDE_FROM else "to_node"][row]
            switches["closed"][k] = closed
    data = apply_switches(data, switches, extra)
    return Grid(
        name=source,
        input=data,
        names=names,
        extra=extra,
        switches=switches,
        switch_names=np.array([s[0] for s in reader.switches], dtype=object),
        switch_kinds=np.array([s[3] for s in reader.switches], dtype=object),
        node_xy=xy,
        frequency_hz=frequency,
    )


# -- engine ------------------------------------------------------------------------------------------


def _compile(path: Path, source: str) -> Any:
    """Compile the master file in a fresh engine context; translate engine errors."""
    import opendssdirect

    dss = opendssdirect.NewContext()
    dss.Basic.AllowChangeDir(False)
    try:
        dss.Text.Command(f'Compile "{path.resolve()}"')
    except opendssdirect.DSSException as exc:
        raise _engine_error(exc, path, source) from None
    if not dss.Circuit.Name():
        raise GridSourceError(source, f"{path.name} defines no circuit (no `New Circuit...`)")
    return dss


def _engine_error(exc: Exception, path: Path, source: str) -> GridSourceError:
    """A GridSourceError naming the file, line and element of an OpenDSS compile error."""
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    where = _ENGINE_WHERE.search(text)
    body = _ENGINE_WHERE.sub("", text)
    # the engine wraps some messages in boilerplate; keep the description
    description = re.search(r"Error Description:\s*(.+?)(?:\n\s*\n|\n\s*Probable Cause|$)", body, re.DOTALL)
    message = description.group(1) if description else body
    message = " ".join(message.split())
    element = None
    for pattern in (_OBJECT_PREFIX, _OBJECT_QUOTED, _OBJECT_NEW):
        match = pattern.search(body)
        if match:
            element = match.group(1).rstrip(".")
            break
    if where:
        file_name, line = where.group(1), where.group(2)
        message = f"{message} (OpenDSS, {file_name}, line {line})"
    else:
        message = f"{message} (OpenDSS, {path})"
    return GridSourceError(source, message, element=element)


def _check_classes(dss: Any, source: str) -> None:
    """Raise for power-carrying elements OpenDSO does not import; log ignored controls."""
    ignored: dict[str, int] = {}
    for full in dss.Circuit.AllElementNames():
        cls = str(full).split(".", 1)[0].lower()
        if cls in _SUPPORTED or cls in _IGNORED:
            continue
        if cls in _CONTROLS:
            ignored[cls] = ignored.get(cls, 0) + 1
            continue
        raise GridSourceError(source, f"OpenDSS element type '{cls}' is not supported", element=str(full))
    for cls, count in ignored.items():
        log.info("event=opendss_control_ignored class=%s count=%d", cls, count)


def _complex_matrix(flat: Any, n: int) -> npt.NDArray[np.complex128]:
    values = np.asarray(flat, dtype=np.float64)
    return (values[0::2] + 1j * values[1::2]).reshape(n, n)


def _bus_and_nodes(spec: str, n_phases: int) -> tuple[str, list[int]]:
    """Split ``bus.1.2`` into the bus name and its nodes (1, 2, 3 by default)."""
    name, *nodes = spec.split(".")
    return name.lower(), [int(k) for k in nodes] if nodes else [1, 2, 3][:n_phases]


# -- element readers ------------------------------------------------------------------------------------


class _Reader:
    """Reads the elements of one compiled circuit into component tables."""

    def __init__(self, dss: Any, source: str, bus_index: dict[str, int], u_rated: np.ndarray, frequency: float):
        self.dss = dss
        self.source = source
        self.bus_index = bus_index
        self.u_rated = u_rated
        self.omega = 2 * math.pi * frequency
        self.tables: dict[str, _Table] = {}
        #: (line name, side, closed, kind) for every switch and opened line terminal
        self.switches: list[tuple[str, int, int, str]] = []

    def table(self, component: str) -> _Table:
        return self.tables.setdefault(component, _Table())

    def error(self, element: str, message: str, fld: str | None = None) -> GridSourceError:
        return GridSourceError(self.source, message, element=element, field=fld)

    def node_of(self, element: str, spec: str, n_phases: int) -> tuple[int, list[int]]:
        bus, nodes = _bus_and_nodes(spec, n_phases)
        if bus not in self.bus_index:
            raise self.error(element, f"refers to bus '{bus}', which the circuit does not have", "bus")
        return self.bus_index[bus], nodes

    def phase_positions(self, element: str, nodes: list[int], n_phases: int) -> list[int]:
        """Phase indices (0, 1, 2) of an element's conductors; earth (node 0) is not a conductor."""
        conductors = nodes[:n_phases]
        if (
            len(conductors) != n_phases
            or any(k not in (1, 2, 3) for k in conductors)
            or len(set(conductors)) != n_phases
        ):
            raise self.error(element, f"conductors on nodes {nodes} are not supported (phases 1-3 only)", "bus")
        return [k - 1 for k in conductors]

    def each(self, interface: Any) -> Any:
        """Iterate over the elements of one class, disabled ones included, making each the active element."""
        if int(interface.Count()) == 0:
            return
        for short in list(interface.AllNames()):
            interface.Name(str(short))
            yield str(self.dss.CktElement.Name())

    # -- lines ---------------------------------------------------------------------------------------
    def read_lines(self) -> None:
        dss = self.dss
        for name in self.each(dss.Lines):
            n = int(dss.Lines.Phases())
            bus1, bus2 = (str(b) for b in dss.CktElement.BusNames()[:2])
            from_node, nodes1 = self.node_of(name, bus1, n)
            to_node, nodes2 = self.node_of(name, bus2, n)
            pos1 = self.phase_positions(name, nodes1, n)
            pos2 = self.phase_positions(name, nodes2, n)
            if pos1 != pos2:
                raise self.error(
                    name, f"connects phases {nodes1} to phases {nodes2}; transpositions are not supported", "bus2"
                )
            y = _complex_matrix(dss.CktElement.YPrim(), 2 * n)
            z = -np.linalg.inv(y[:n, n:])
            c = (y[:n, :n] + y[:n, n:]).imag * 2.0 / self.omega
            enabled = bool(dss.CktElement.Enabled())
            is_switch = bool(dss.Lines.IsSwitch())
            i_n = float(dss.Lines.NormAmps())
            extra = {
                "in_service": enabled,
                "kind": "switch" if is_switch else "line",
                "phases": "".join("abc"[p] for p in pos1),
                "linecode": str(dss.Lines.LineCode()),
                "length": float(dss.Lines.Length()),
            }
            if n == 3 and pos1 == [0, 1, 2] and _balanced(z) and _balanced(c):
                zs, zm = np.diag(z).mean(), z[~np.eye(3, dtype=bool)].mean()
                cs, cm = np.diag(c).mean(), c[~np.eye(3, dtype=bool)].mean()
                z1, z0 = zs - zm, zs + 2 * zm
                self.table("line").add(
                    name,
                    {
                        "from_node": from_node,
                        "to_node": to_node,
                        "r1": z1.real,
                        "x1": z1.imag,
                        "r0": z0.real,
                        "x0": z0.imag,
                        "c1": cs - cm,
                        "c0": cs + 2 * cm,
                        "tan1": 0.0,
                        "tan0": 0.0,
                        "i_n": i_n,
                    },
                    extra,
                )
            else:
                zf = np.diag(np.full(3, ABSENT_PHASE_OHM, dtype=np.complex128))
                cf = np.zeros((3, 3))
                zf[np.ix_(pos1, pos1)] = z
                cf[np.ix_(pos1, pos1)] = c
                row: dict[str, Any] = {"from_node": from_node, "to_node": to_node, "i_n": i_n}
                for i, j in ((0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)):
                    key = "abc"[i] + "abc"[j]
                    row[f"r_{key}"] = zf[i, j].real
                    row[f"x_{key}"] = zf[i, j].imag
                    # power-grid-model takes the Maxwell capacitance matrix as OpenDSS gives it
                    row[f"c_{key}"] = cf[i, j]
                self.table("asym_line").add(name, row, extra)
            open1 = bool(dss.CktElement.IsOpen(1, 0))
            open2 = bool(dss.CktElement.IsOpen(2, 0))
            if is_switch:
                self.switches.append((name, SIDE_FROM, int(not (open1 or open2)), "switch"))
            else:
                if open1:
                    self.switches.append((name, SIDE_FROM, 0, "terminal"))
                if open2:
                    self.switches.append((name, SIDE_TO, 0, "terminal"))

    # -- transformers --------------------------------------------------------------------------------
    def read_transformers(self) -> None:
        dss = self.dss
        for name in self.each(dss.Transformers):
            if int(dss.Transformers.NumWindings()) != 2:
                raise self.error(name, "only two-winding transformers are supported", "windings")
            if int(dss.CktElement.NumPhases()) != 3:
                raise self.error(name, "only three-phase transformers are supported", "phases")
            buses = [str(b) for b in dss.CktElement.BusNames()[:2]]
            ends = [self.node_of(name, b, 3)[0] for b in buses]
            kv, kva, r_pct, tap, delta = [], [], [], [], []
            for w in (1, 2):
                dss.Transformers.Wdg(w)
                kv.append(float(dss.Transformers.kV()))
                kva.append(float(dss.Transformers.kVA()))
                r_pct.append(float(dss.Transformers.R()))
                tap.append(float(dss.Transformers.Tap()))
                delta.append(bool(dss.Transformers.IsDelta()))
            x_pct = float(dss.Transformers.Xhl())
            imag = self.property_float(name, "%imag")
            noload = self.property_float(name, "%noloadloss")
            lead = self.property_text(name, "leadlag").strip().lower() in ("lead", "euro")
            sn = kva[0] * 1e3
            r_total = (r_pct[0] + r_pct[1]) / 100.0
            row: dict[str, Any] = {
                "from_node": ends[0],
                "to_node": ends[1],
                "u1": kv[0] * 1e3,
                "u2": kv[1] * 1e3,
                "sn": sn,
                "uk": math.hypot(r_total, x_pct / 100.0),
                "pk": r_total * sn,
                "p0": 0.0,
                "i0": 0.0,
                "winding_from": WindingType.delta if delta[0] else WindingType.wye_n,
                "winding_to": WindingType.delta if delta[1] else WindingType.wye_n,
                "clock": (11 if lead else 1) if delta[0] != delta[1] else 0,
                "tap_side": 0,
                "tap_pos": 0,
                "tap_nom": 0,
                "tap_min": 0,
                "tap_max": 0,
                "tap_size": 0.0,
            }
            off = [abs(t - 1.0) > 1e-12 for t in tap]
            if all(off):
                raise self.error(name, "taps on both windings are not supported", "taps")
            if any(off):
                side = 0 if off[0] else 1
                step = (float(dss.Transformers.MaxTap()) - float(dss.Transformers.MinTap())) / max(
                    int(dss.Transformers.NumTaps()), 1
                )
                position = (tap[side] - 1.0) / step if step > 0 else 0.0
                if step <= 0 or abs(position - round(position)) > 1e-6:
                    step, position = tap[side] - 1.0, 1.0  # tap between steps: one step of exactly that size
                row.update(
                    {
                        "tap_side": side,
                        "tap_pos": round(position),
                        "tap_nom": 0,
                        "tap_min": min(round((float(dss.Transformers.MinTap()) - 1.0) / step), round(position)),
                        "tap_max": max(round((float(dss.Transformers.MaxTap()) - 1.0) / step), round(position)),
                        "tap_size": kv[side] * 1e3 * step,
                    }
                )
                if step < 0:  # power-grid-model wants a positive step; count positions the other way
                    row.update(
                        {
                            "tap_size": -row["tap_size"],
                            "tap_pos": -row["tap_pos"],
                            "tap_min": -row["tap_max"],
                            "tap_max": -row["tap_min"],
                        }
                    )
            enabled = bool(dss.CktElement.Enabled())
            self.table("transformer").add(
                name,
                row,
                {
                    "in_service": enabled,
                    "kind": "transformer",
                    "tap_ratio_1": tap[0],
                    "tap_ratio_2": tap[1],
                    "sn_2_va": kva[1] * 1e3,
                    "p0_w": noload / 100.0 * sn,
                    "i0": math.hypot(imag, noload) / 100.0,
                },
            )
            if imag or noload:
                # OpenDSS connects the magnetising branch across winding 2 (whichever side that is)
                u2 = kv[1] * 1e3 * tap[1]
                g, b = noload / 100.0 * sn / u2**2, -imag / 100.0 * sn / u2**2
                self.table("shunt").add(
                    name,
                    {
                        "node": ends[1],
                        "status": int(enabled),
                        "g1": g,
                        "b1": b,
                        "g0": 0.0 if delta[1] else g,
                        "b0": 0.0 if delta[1] else b,
                    },
                    {
                        "in_service": enabled,
                        "kind": "transformer magnetising",
                        "connection": "delta" if delta[1] else "wye",
                        "q_rated_var": b * u2**2,
                    },
                )

    def property_text(self, element: str, prop: str) -> str:
        self.dss.Text.Command(f"? {element}.{prop}")
        return str(self.dss.Text.Result())

    def property_float(self, element: str, prop: str) -> float:
        return float(self.property_text(element, prop).strip("[] "))

    def property_complex(self, element: str, prop: str) -> complex:
        parts = [float(p) for p in re.split(r"[\s,]+", self.property_text(element, prop).strip("[] ")) if p]
        return complex(parts[0], parts[1])

    # -- sources --------------------------------------------------------------------------------------
    def read_vsources(self) -> None:
        dss = self.dss
        for name in self.each(dss.Vsources):
            if int(dss.Vsources.Phases()) != 3:
                raise self.error(name, "only three-phase voltage sources are supported", "phases")
            buses = [str(b) for b in dss.CktElement.BusNames()]
            node, _ = self.node_of(name, buses[0], 3)
            if len(buses) > 1 and any(k != "0" for k in buses[1].split(".")[1:]):
                raise self.error(name, "a voltage source must be earthed at bus2", "bus2")
            z1 = self.property_complex(name, "Z1")
            z0 = self.property_complex(name, "Z0")
            u_node = float(self.u_rated[node])
            base_v = float(dss.Vsources.BasekV()) * 1e3
            sk = u_node**2 / abs(z1)
            rx = z1.real / z1.imag if z1.imag else 0.0
            self.table("source").add(
                name,
                {
                    "node": node,
                    "status": int(dss.CktElement.Enabled()),
                    "u_ref": float(dss.Vsources.PU()) * base_v / u_node,
                    "u_ref_angle": math.radians(float(dss.Vsources.AngleDeg())),
                    "sk": sk,
                    "rx_ratio": rx,
                    "z01_ratio": abs(z0) / abs(z1),
                },
                {
                    "in_service": bool(dss.CktElement.Enabled()),
                    "sk_max_va": self.property_float(name, "MVAsc3") * 1e6,
                    "sk_min_va": self.property_float(name, "MVAsc3") * 1e6,
                    "sk1_va": self.property_float(name, "MVAsc1") * 1e6,
                    "rx_max": rx,
                    "rx_min": rx,
                    "z01_ratio": abs(z0) / abs(z1),
                    "rx0_ratio": z0.real / z0.imag if z0.imag else 0.0,
                },
            )

    # -- loads ----------------------------------------------------------------------------------------
    def read_loads(self) -> None:
        dss = self.dss
        load_mult = float(dss.Solution.LoadMult())
        for name in self.each(dss.Loads):
            model = int(dss.Loads.Model())
            if model not in _LOAD_TYPES:
                raise self.error(name, f"load model {model} is not supported (1, 2 and 5 are)", "model")
            n = int(dss.CktElement.NumPhases())
            bus = str(dss.CktElement.BusNames()[0])
            node, nodes = self.node_of(name, bus, n)
            delta = bool(dss.Loads.IsDelta())
            fixed = str(self.property_text(name, "status")).strip().lower().startswith("fix")
            mult = 1.0 if fixed else load_mult
            p = float(dss.Loads.kW()) * 1e3 * mult
            q = float(dss.Loads.kvar()) * 1e3 * mult
            kv = float(dss.Loads.kV())
            # the load's kV is line-to-line for three-phase and wye two-phase loads, across the load otherwise
            u_load = kv * 1e3 / (math.sqrt(3.0) if (n >= 2 and not delta) or (n == 3) else 1.0)
            u_node = float(self.u_rated[node]) / math.sqrt(3.0)
            if delta and n < 3:
                raise self.error(name, "phase-to-phase loads are not supported", "conn")
            scale = (u_node / u_load) ** _LOAD_EXPONENT[model]
            extra = {
                "in_service": bool(dss.CktElement.Enabled()),
                "kind": "load",
                "connection": "delta" if delta else "wye",
                "model": model,
                "vmin_pu": float(dss.Loads.Vminpu()),
                "vmax_pu": float(dss.Loads.Vmaxpu()),
            }
            status = int(dss.CktElement.Enabled())
            if n == 3:
                if delta:
                    scale = (u_node * math.sqrt(3.0) / (kv * 1e3)) ** _LOAD_EXPONENT[model]
                self.table("sym_load").add(
                    name,
                    {
                        "node": node,
                        "status": status,
                        "type": _LOAD_TYPES[model],
                        "p_specified": p * scale,
                        "q_specified": q * scale,
                    },
                    extra,
                )
                continue
            pos = self.phase_positions(name, nodes, n)
            p3, q3 = np.zeros(3), np.zeros(3)
            p3[pos] = p * scale / n
            q3[pos] = q * scale / n
            self.table("asym_load").add(
                name,
                {"node": node, "status": status, "type": _LOAD_TYPES[model], "p_specified": p3, "q_specified": q3},
                extra,
            )

    # -- generators -----------------------------------------------------------------------------------
    def read_generators(self) -> None:
        dss = self.dss
        for interface, kind in ((dss.PVsystems, "pv"), (dss.Generators, "generator")):
            for name in self.each(interface):
                if kind == "generator" and int(dss.Generators.Model()) != 1:
                    raise self.error(
                        name, f"generator model {int(dss.Generators.Model())} is not supported (1 is)", "model"
                    )
                n = int(dss.CktElement.NumPhases())
                node, nodes = self.node_of(name, str(dss.CktElement.BusNames()[0]), n)
                p = float(interface.kW()) * 1e3
                q = float(interface.kvar()) * 1e3
                extra = {
                    "in_service": bool(dss.CktElement.Enabled()),
                    "kind": kind,
                    "vmin_pu": self.property_float(name, "vminpu"),
                    "vmax_pu": self.property_float(name, "vmaxpu"),
                }
                status = int(dss.CktElement.Enabled())
                if n == 3:
                    self.table("sym_gen").add(
                        name,
                        {
                            "node": node,
                            "status": status,
                            "type": LoadGenType.const_power,
                            "p_specified": p,
                            "q_specified": q,
                        },
                        extra,
                    )
                    continue
                if self.property_text(name, "conn").strip().lower().startswith("d"):
                    raise self.error(name, "phase-to-phase generators are not supported", "conn")
                pos = self.phase_positions(name, nodes, n)
                p3, q3 = np.zeros(3), np.zeros(3)
                p3[pos] = p / n
                q3[pos] = q / n
                self.table("asym_gen").add(
                    name,
                    {
                        "node": node,
                        "status": status,
                        "type": LoadGenType.const_power,
                        "p_specified": p3,
                        "q_specified": q3,
                    },
                    extra,
                )

    # -- capacitors -----------------------------------------------------------------------------------
    def read_capacitors(self) -> None:
        dss = self.dss
        for name in self.each(dss.Capacitors):
            if int(dss.CktElement.NumPhases()) != 3:
                raise self.error(name, "only three-phase capacitors are supported", "phases")
            buses = [str(b) for b in dss.CktElement.BusNames()]
            node, _ = self.node_of(name, buses[0], 3)
            if len(buses) > 1 and buses[1].split(".")[0].lower() != buses[0].split(".")[0].lower():
                raise self.error(name, "series capacitors are not supported", "bus2")
            steps = [float(v) for v in re.split(r"[\s,]+", self.property_text(name, "kvar").strip("[] ")) if v]
            states = list(dss.Capacitors.States())
            q_on = sum(k * s for k, s in zip(steps, states, strict=False)) * 1e3
            kv = float(dss.Capacitors.kV()) * 1e3
            b = q_on / kv**2
            delta = bool(dss.Capacitors.IsDelta())
            self.table("shunt").add(
                name,
                {
                    "node": node,
                    "status": int(dss.CktElement.Enabled()),
                    "g1": 0.0,
                    "b1": b,
                    "g0": 0.0,
                    "b0": 0.0 if delta else b,
                },
                {
                    "in_service": bool(dss.CktElement.Enabled()),
                    "kind": "capacitor",
                    "connection": "delta" if delta else "wye",
                    "q_rated_var": q_on,
                },
            )


def _balanced(m: np.ndarray) -> bool:
    """True when a 3x3 matrix has equal diagonal and equal off-diagonal entries."""
    diag = np.diag(m)
    off = m[~np.eye(3, dtype=bool)]
    scale = max(float(np.abs(m).max()), 1e-300)
    return bool(
        np.abs(diag - diag[0]).max() <= BALANCED_RTOL * scale and np.abs(off - off[0]).max() <= BALANCED_RTOL * scale
    )


__all__ = ["ABSENT_PHASE_OHM", "read_opendss"]

"""The measurement file reader: CSV or JSON rows naming elements by their source names, to sensor arrays.

One row per scalar measurement (``element``, ``quantity``, ``side``, ``value``, ``sigma``; see
:func:`read_measurements`). Every bad row raises :class:`MeasurementFileError` naming the file,
the 1-based data row and the field, before any calculation runs.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from power_grid_model import AngleMeasurementType, MeasuredTerminalType, initialize_array

from opendso.calc.sensors import APPLIANCE_TERMINALS, MEASURABLE_BRANCHES, UNMEASURED_SIGMA_FACTOR, Measurements
from opendso.errors import MeasurementFileError
from opendso.grid.model import Grid

#: Columns of a measurement file; ``side`` may be left out when no row measures a branch.
FILE_COLUMNS: tuple[str, ...] = ("element", "quantity", "side", "value", "sigma")
_REQUIRED = ("element", "quantity", "value", "sigma")


def read_measurements(path: Path, grid: Grid) -> Measurements:
    """Return the sensor arrays described by a CSV or JSON measurement file.

    One row per scalar measurement, with columns (CSV header, or keys of each object in a JSON
    list, or in its ``"measurements"`` list):

    - ``element``: the measured element's name in its source (a node, a line or transformer,
      a load, generator or source);
    - ``quantity``: ``u`` (voltage magnitude, line-to-line, at a node), ``p`` (active power),
      ``q`` (reactive power) or ``i`` (current magnitude, at a branch end);
    - ``side``: ``from`` or ``to`` for a branch (``hv``/``lv`` are accepted for transformers),
      empty otherwise;
    - ``value`` and ``sigma`` (standard deviation, > 0) in SI units: V, W, var, A. Branch power
      is measured into the branch; a load's power is consumption, a generator's or source's
      injection (power-grid-model's conventions).

    A p without a matching q on the same element and side (or the reverse) is taken as an
    unmeasured q with no weight. Any bad row raises :class:`MeasurementFileError` (an
    :class:`~opendso.errors.InputError`) naming the file, the 1-based data row and the field.
    """
    records = _read_records(path)
    lookup = _NameLookup(grid)
    voltage: list[tuple[int, float, float]] = []
    power: dict[tuple[int, int], dict[str, tuple[float, float]]] = {}
    current: list[tuple[int, int, float, float]] = []
    for row, record in enumerate(records, start=1):
        for column in _REQUIRED:
            if column not in record:
                raise MeasurementFileError(path, "missing column", row=row, field=column)
        name = str(record["element"]).strip()
        quantity = str(record["quantity"]).strip().lower()
        side = str(record.get("side") or "").strip().lower()
        if side in ("nan", "none"):
            side = ""
        value = _number(path, row, "value", record["value"])
        sigma = _number(path, row, "sigma", record["sigma"])
        if not sigma > 0:
            raise MeasurementFileError(path, f"sigma must be positive, got {sigma}", row=row, field="sigma")
        if quantity not in ("u", "p", "q", "i"):
            raise MeasurementFileError(
                path, f"unknown quantity {quantity!r} (expected u, p, q or i)", row=row, field="quantity"
            )
        if quantity == "u":
            node = lookup.node(name)
            if node is None:
                raise MeasurementFileError(path, f"no node named {name!r}", row=row, field="element")
            voltage.append((node, value, sigma))
            continue
        target = lookup.terminal(name, side, branch_only=quantity == "i")
        if isinstance(target, str):
            raise MeasurementFileError(path, target, row=row, field="side" if "side" in target else "element")
        if quantity == "i":
            current.append((*target, value, sigma))
        else:
            entry = power.setdefault(target, {})
            if quantity in entry:
                raise MeasurementFileError(
                    path, f"{quantity} of {name!r} {side} given twice", row=row, field="quantity"
                )
            entry[quantity] = (value, sigma)
    out: Measurements = {}
    next_id = grid.max_id + 1
    if voltage:
        vs = initialize_array("input", "sym_voltage_sensor", len(voltage))
        vs["id"] = np.arange(next_id, next_id + vs.size)
        vs["measured_object"], vs["u_measured"], vs["u_sigma"] = (np.array(c) for c in zip(*voltage, strict=True))
        next_id += vs.size
        out["sym_voltage_sensor"] = vs
    if power:
        keys = list(power)
        ps = initialize_array("input", "sym_power_sensor", len(keys))
        ps["id"] = np.arange(next_id, next_id + ps.size)
        ps["measured_object"] = [k[0] for k in keys]
        ps["measured_terminal_type"] = [k[1] for k in keys]
        for quantity, other in (("p", "q"), ("q", "p")):
            values = [power[k].get(quantity, (0.0, UNMEASURED_SIGMA_FACTOR * power[k][other][1])) for k in keys]
            ps[f"{quantity}_measured"] = [v[0] for v in values]
            ps[f"{quantity}_sigma"] = [v[1] for v in values]
        next_id += ps.size
        out["sym_power_sensor"] = ps
    if current:
        cs = initialize_array("input", "sym_current_sensor", len(current))
        cs["id"] = np.arange(next_id, next_id + cs.size)
        cs["measured_object"], cs["measured_terminal_type"], cs["i_measured"], cs["i_sigma"] = (
            np.array(c) for c in zip(*current, strict=True)
        )
        cs["angle_measurement_type"] = AngleMeasurementType.local_angle
        cs["i_angle_measured"] = 0.0
        cs["i_angle_sigma"] = np.pi  # magnitude only
        out["sym_current_sensor"] = cs
    return out


def _read_records(path: Path) -> list[Mapping[str, Any]]:
    """Rows of a CSV or JSON measurement file as mappings."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MeasurementFileError(path, f"cannot read: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MeasurementFileError(path, f"malformed JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("measurements")
        if not isinstance(data, list):
            raise MeasurementFileError(path, "expected a list of measurements (or an object with 'measurements')")
        for row, record in enumerate(data, start=1):
            if not isinstance(record, dict):
                raise MeasurementFileError(path, "each measurement must be an object", row=row)
        return data
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:
        raise MeasurementFileError(path, "empty file: expected a header " + ",".join(FILE_COLUMNS))
    header = [f.strip().lower() for f in reader.fieldnames]
    for column in _REQUIRED:
        if column not in header:
            raise MeasurementFileError(path, "missing column in the header", row=None, field=column)
    records: list[Mapping[str, Any]] = []
    for raw in reader:
        records.append({k.strip().lower(): v for k, v in raw.items() if k is not None and v is not None})
    return records


def _number(path: Path, row: int, column: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise MeasurementFileError(path, f"not a number: {raw!r}", row=row, field=column) from None
    if not math.isfinite(value):
        raise MeasurementFileError(path, f"not a finite number: {raw!r}", row=row, field=column)
    return value


class _NameLookup:
    """Element names of a grid, to resolve measurement-file rows."""

    def __init__(self, grid: Grid) -> None:
        def table(components: Iterable[str]) -> dict[str, tuple[str, int]]:
            out: dict[str, tuple[str, int]] = {}
            for component in components:
                array = grid.input.get(component)
                if array is None or not array.size:
                    continue
                for name, element_id in zip(grid.names_of(component), array["id"].tolist(), strict=True):
                    out.setdefault(str(name), (component, element_id))
            return out

        self.nodes = table(("node",))
        self.branches = table(MEASURABLE_BRANCHES)
        self.appliances = table(APPLIANCE_TERMINALS)

    def node(self, name: str) -> int | None:
        hit = self.nodes.get(name)
        return hit[1] if hit else None

    def terminal(self, name: str, side: str, *, branch_only: bool) -> tuple[int, int] | str:
        """(element id, terminal type) for a power or current measurement, or the reason it is bad."""
        branch = self.branches.get(name)
        if branch is not None:
            if side in ("from", "hv"):
                return branch[1], int(MeasuredTerminalType.branch_from)
            if side in ("to", "lv"):
                return branch[1], int(MeasuredTerminalType.branch_to)
            return f"branch {name!r} needs side 'from' or 'to', got {side!r}"
        if branch_only:
            return f"no line or transformer named {name!r}"
        if side:
            return f"side {side!r} given for {name!r}, which is not a branch"
        appliance = self.appliances.get(name)
        if appliance is not None:
            return appliance[1], int(APPLIANCE_TERMINALS[appliance[0]])
        if self.node(name) is not None:
            return f"{name!r} is a node: p and q are measured on a branch end, a load, a generator or a source"
        return f"no element named {name!r}"

"""Validation of a grid: findings as objects, and :func:`assert_valid` that raises one error listing them.

:func:`validate_grid` runs power-grid-model's own input validation (ids, references, value
ranges, transformer clocks, ...) and OpenDSO's checks on what power-grid-model does not see
(switches, coordinates, profiles, impedances that must be strictly positive). Each finding names
the component, the field, the ids and the elements' source names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from power_grid_model.validation import validate_input_data

from opendso.errors import GridValidationError
from opendso.grid.model import Grid

#: Lines whose series impedance must be strictly positive (zero impedance is a link, not a line).
_POSITIVE_LINE_FIELDS = ("x1",)


@dataclass(frozen=True)
class Finding:
    """One problem in the grid data: which component, field and elements, and what is wrong."""

    component: str
    field: str
    ids: tuple[int, ...]
    message: str
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        who = ", ".join(self.names[:5]) if self.names else ", ".join(map(str, self.ids[:5]))
        more = f" and {len(self.ids) - 5} more" if len(self.ids) > 5 else ""
        return f"{self.component}.{self.field} ({who}{more}): {self.message}"


def _names_for(grid: Grid, component: str, ids: tuple[int, ...]) -> tuple[str, ...]:
    array = grid.component(component)
    if not array.size or not ids:
        return ()
    names = grid.names_of(component)
    rows = np.flatnonzero(np.isin(array["id"], np.asarray(ids)))
    return tuple(str(n) for n in names[rows])


def validate_grid(grid: Grid, *, symmetric: bool = True) -> list[Finding]:
    """Return every problem found in the grid data (an empty list for a valid grid)."""
    findings: list[Finding] = []
    # ids must be unique across all components, sensors included
    all_ids = np.concatenate(
        [a["id"] for a in list(grid.input.values()) + list(grid.sensors.values()) if a.size] or [np.zeros(0, int)]
    )
    unique, counts = np.unique(all_ids, return_counts=True)
    if (counts > 1).any():
        dup = tuple(int(i) for i in unique[counts > 1])
        for component, array in list(grid.input.items()) + list(grid.sensors.items()):
            hit = tuple(int(i) for i in array["id"][np.isin(array["id"], dup)]) if array.size else ()
            if hit:
                findings.append(
                    Finding(component, "id", hit, "id used by more than one element", _names_for(grid, component, hit))
                )
        return findings  # power-grid-model's checks are meaningless with duplicate ids

    for error in validate_input_data(grid.pgm_input(with_sensors=False), symmetric=symmetric) or []:
        component = str(getattr(error, "component_str", getattr(error, "component", "?")))
        fld = str(getattr(error, "field_str", getattr(error, "field", "?")))
        ids = tuple(int(i) for i in (error.ids or []) if isinstance(i, (int, np.integer)))
        findings.append(Finding(component, fld, ids, str(error), _names_for(grid, component, ids)))

    line = grid.component("line")
    if line.size:
        for fld in _POSITIVE_LINE_FIELDS:
            bad = line["id"][~(np.abs(line["r1"]) + np.abs(line[fld]) > 0)]
            if bad.size:
                ids = tuple(int(i) for i in bad)
                findings.append(
                    Finding(
                        "line",
                        "r1/x1",
                        ids,
                        "line with zero series impedance (use a link)",
                        _names_for(grid, "line", ids),
                    )
                )
        neg = line["id"][(line["r1"] < 0)]
        if neg.size:
            ids = tuple(int(i) for i in neg)
            findings.append(Finding("line", "r1", ids, "negative resistance", _names_for(grid, "line", ids)))
    trafo = grid.component("transformer")
    if trafo.size:
        bad = trafo["id"][~(trafo["uk"] > 0)]
        if bad.size:
            ids = tuple(int(i) for i in bad)
            findings.append(
                Finding(
                    "transformer",
                    "uk",
                    ids,
                    "short-circuit voltage must be positive",
                    _names_for(grid, "transformer", ids),
                )
            )

    if grid.switches.size:
        branch_ids = np.concatenate([a["id"] for _, a in grid.iter_branches()] or [np.zeros(0, np.int32)])
        t3 = grid.component("three_winding_transformer")["id"]
        known = np.isin(grid.switches["element"], np.concatenate([branch_ids, t3]))
        if not known.all():
            ids = tuple(int(i) for i in grid.switches["id"][~known])
            names = tuple(str(n) for n in grid.switch_names[~known])
            findings.append(Finding("switch", "element", ids, "switch acts on an element that does not exist", names))
        nodes = np.isin(grid.switches["node"], grid.component("node")["id"])
        if not nodes.all():
            ids = tuple(int(i) for i in grid.switches["id"][~nodes])
            findings.append(
                Finding(
                    "switch",
                    "node",
                    ids,
                    "switch at a node that does not exist",
                    tuple(str(n) for n in grid.switch_names[~nodes]),
                )
            )

    if grid.node_xy.size and grid.node_xy.shape != (grid.count("node"), 2):
        findings.append(
            Finding(
                "node", "xy", (), f"coordinates have shape {grid.node_xy.shape}, expected ({grid.count('node')}, 2)"
            )
        )

    profiles = grid.profiles
    if profiles is not None:
        if not np.isfinite(profiles.values).all():
            cols = np.flatnonzero(~np.isfinite(profiles.values).all(axis=0))
            findings.append(
                Finding(
                    "profiles",
                    "values",
                    (),
                    "profiles hold NaN or infinite values: " + ", ".join(profiles.columns[c] for c in cols[:5]),
                )
            )
        for assignment in profiles.assignments:
            known = np.isin(assignment.ids, grid.component(assignment.component)["id"])
            if not known.all():
                ids = tuple(int(i) for i in assignment.ids[~known])
                findings.append(
                    Finding(
                        assignment.component,
                        assignment.attribute,
                        ids,
                        "profile assigned to an element that does not exist",
                    )
                )
    return findings


def assert_valid(grid: Grid, *, symmetric: bool = True) -> None:
    """Raise :class:`~opendso.errors.GridValidationError` listing every finding, if there are any."""
    findings = validate_grid(grid, symmetric=symmetric)
    if findings:
        raise GridValidationError(grid.name, findings)

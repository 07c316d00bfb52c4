"""Customer counts per load and per node: from the source, else configuration, else annual energy.

Outage management and FLISR count customers (IEEE 1366 counts *customers* interrupted, not
loads). Most grid sources do not say how many customers a load stands for, so the count of
each load is taken from the first of these that gives one:

1. **The source data**: the load's ``customers`` column (a pandapower ``load.customers``
   column, carried into ``grid.extra["sym_load"]["customers"]``), where it holds a
   non-negative whole number.
2. **The configuration**: a mapping from the load's name in its source to its count.
3. **An estimate from the load's annual energy**: ``max(1, round(E / kwh_per_customer))``
   with ``E`` the load's annual energy in kWh and ``kwh_per_customer`` 3,500 kWh by default
   (a typical household). ``E`` is the mean of the load's active-power profile over the
   grid's profiles times 8,760 h when those profiles span a year (365 days or more), else
   the base-case ``|p_specified|`` times 8,760 h. A load whose annual energy is zero counts
   **0** customers (a placeholder with no consumption interrupts nobody).

A load split into constant-power, constant-current and constant-impedance parts (one
``sym_load`` row each) is one load: its count sits on its first row and the other rows count 0;
its energy is the sum of its parts. Storage units (``kind == "storage"``) count 0 customers.
Counts do not depend on whether a load is in service: a load switched out still has customers.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral

import numpy as np
import numpy.typing as npt

from opendso.errors import InputError
from opendso.grid.model import Grid

__all__ = ["DEFAULT_KWH_PER_CUSTOMER", "annual_energy_kwh", "customer_counts", "customers_by_node"]

#: Annual consumption of one customer used to estimate counts from energy (kWh per year).
DEFAULT_KWH_PER_CUSTOMER = 3500.0

_HOURS_PER_YEAR = 8760.0
_YEAR = np.timedelta64(365, "D")


def _load_groups(grid: Grid) -> npt.NDArray[np.int64]:
    """Label each sym_load row with its source load (parts of one load share a label)."""
    n = grid.count("sym_load")
    table = grid.column("sym_load", "source_table")
    index = grid.column("sym_load", "source_index")
    known = np.array([t is not None and i is not None for t, i in zip(table, index, strict=True)], dtype=bool)
    if n == 0 or not known.any():
        return np.arange(n, dtype=np.int64)
    _, table_code = np.unique(np.where(known, table, "").astype(str), return_inverse=True)
    _, index_code = np.unique(np.where(known, index, "").astype(str), return_inverse=True)
    key = table_code.astype(np.int64) * (int(index_code.max()) + 1) + index_code
    # rows without a source key are loads of their own: give them keys no source load has
    key = np.where(known, key, -1 - np.arange(n))
    _, first, labels = np.unique(key, return_index=True, return_inverse=True)
    # number the loads in row order of their first part
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    groups: npt.NDArray[np.int64] = rank[labels.reshape(-1)]
    return groups


def _profile_spans_year(grid: Grid) -> bool:
    profiles = grid.profiles
    if profiles is None or profiles.steps < 2:
        return False
    time = profiles.time
    step = time[1] - time[0]
    return bool(time[-1] - time[0] + step >= _YEAR)


def annual_energy_kwh(grid: Grid) -> npt.NDArray[np.float64]:
    """Return each sym_load row's annual energy in kWh (profile mean over a year, else base case).

    The profile-based value is linear in the profile, so the mean of each profile column is
    taken once and scaled per load (no load-by-step table is built).
    """
    loads = grid.component("sym_load")
    power_w = np.abs(loads["p_specified"].astype(np.float64))
    power_w = np.nan_to_num(power_w, nan=0.0)
    if _profile_spans_year(grid):
        assert grid.profiles is not None
        for assignment in grid.profiles.assignments:
            if assignment.component != "sym_load" or assignment.attribute != "p_specified":
                continue
            col_mean = np.nanmean(grid.profiles.values, axis=0) if grid.profiles.values.size else np.zeros(0)
            has = assignment.column >= 0
            mean_w = np.where(has, col_mean[np.where(has, assignment.column, 0)] * assignment.scale, assignment.scale)
            order = np.argsort(loads["id"])
            pos = np.searchsorted(loads["id"], assignment.ids, sorter=order)
            pos = np.clip(pos, 0, max(loads.size - 1, 0))
            hit = loads["id"][order[pos]] == assignment.ids
            power_w = power_w.copy()
            power_w[order[pos[hit]]] = np.abs(np.nan_to_num(mean_w[hit], nan=0.0))
    return power_w * _HOURS_PER_YEAR / 1000.0


def _whole(value: object) -> int | None:
    """Return ``value`` as a non-negative int when it is a finite whole number, else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, float | np.floating):
        if not np.isfinite(value) or float(value) != round(float(value)):
            return None
        return int(value)
    return None


def customer_counts(
    grid: Grid,
    *,
    configured: Mapping[str, int] | None = None,
    kwh_per_customer: float = DEFAULT_KWH_PER_CUSTOMER,
) -> npt.NDArray[np.int64]:
    """Return the number of customers of each sym_load row, by the rule in this module's docstring.

    Raises :class:`~opendso.errors.InputError` naming the load when ``configured`` names a load
    the grid does not have or gives a count that is not a non-negative whole number, when the
    source column holds a negative or fractional count, or when ``kwh_per_customer`` is not
    positive.
    """
    if not (np.isfinite(kwh_per_customer) and kwh_per_customer > 0):
        raise InputError(f"kwh_per_customer must be a positive number of kWh, not {kwh_per_customer!r}")
    n = grid.count("sym_load")
    names = grid.names_of("sym_load")
    groups = _load_groups(grid)
    first = np.zeros(n, dtype=bool)
    if n:
        _, first_rows = np.unique(groups, return_index=True)
        first[first_rows] = True
    kind = grid.column("sym_load", "kind")
    storage = np.array([k == "storage" for k in kind], dtype=bool)

    counts = np.full(n, -1, dtype=np.int64)

    # 1. the source data
    source = grid.extra.get("sym_load", {}).get("customers")
    if source is not None:
        for row in np.flatnonzero(first):
            value = source[row]
            if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
                continue
            whole = _whole(value)
            if whole is None or whole < 0:
                raise InputError(
                    f"load {names[row]!s}: customers {value!r} in the source is not a non-negative whole number"
                )
            counts[row] = whole

    # 2. the configuration
    if configured:
        first_row_of: dict[str, int] = {}
        for row in np.flatnonzero(first):
            first_row_of.setdefault(str(names[row]), int(row))
        for name, value in configured.items():
            row_or_none = first_row_of.get(str(name))
            if row_or_none is None:
                raise InputError(
                    f"customer count configured for load {name!r}, which the grid {grid.name!r} does not have"
                )
            whole = _whole(value)
            if whole is None or whole < 0:
                raise InputError(f"load {name!r}: configured customers {value!r} is not a non-negative whole number")
            if counts[row_or_none] < 0:
                counts[row_or_none] = whole

    # 3. the annual-energy estimate
    missing = first & (counts < 0)
    if missing.any():
        energy = np.bincount(groups, weights=annual_energy_kwh(grid), minlength=int(groups.max(initial=-1)) + 1)[groups]
        estimate = np.where(energy > 0, np.maximum(1, np.rint(energy / kwh_per_customer)), 0).astype(np.int64)
        counts[missing] = estimate[missing]
    counts[~first | storage] = 0
    counts[counts < 0] = 0
    return counts


def customers_by_node(grid: Grid, counts: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Return the customers at each node row (the sum of the counts of its loads)."""
    loads = grid.component("sym_load")
    values = np.asarray(counts, dtype=np.int64)
    if values.shape != (loads.size,):
        raise InputError(f"customer counts: {values.size} values for {loads.size} loads")
    n_nodes = grid.count("node")
    if not loads.size:
        return np.zeros(n_nodes, dtype=np.int64)
    rows = grid.node_positions(loads["node"])
    return np.bincount(rows, weights=values, minlength=n_nodes).astype(np.int64)

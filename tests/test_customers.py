"""Customer counts: source column, configuration, annual-energy estimate, per node; bad configuration."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from opendso.errors import InputError
from opendso.grid import Grid, ProfileAssignment, Profiles, from_pandapower
from opendso.grid.customers import customer_counts, customers_by_node


def _net(*, with_customers: bool) -> Any:
    import pandapower as pp

    net = pp.create_empty_network()
    b = [pp.create_bus(net, vn_kv=0.4, name=f"b{i}") for i in range(4)]
    pp.create_ext_grid(net, b[0])
    for i in range(1, 4):
        pp.create_line_from_parameters(net, b[i - 1], b[i], 0.1, 0.2, 0.08, 200, 0.2, name=f"l{i}")
    # 7 kW for a year = 61,320 kWh -> 17.52 -> 18 customers at 3,500 kWh
    pp.create_load(net, b[1], p_mw=0.007, name="A")
    # split into constant-power and constant-current parts: one load of 3.5 kW -> 30,660 kWh -> 9
    pp.create_load(net, b[2], p_mw=0.0035, const_i_p_percent=40.0, name="B")
    pp.create_load(net, b[3], p_mw=0.0, name="C")  # no energy: 0
    pp.create_load(net, b[3], p_mw=0.0001, name="D")  # 876 kWh: at least 1
    pp.create_storage(net, b[2], p_mw=0.01, max_e_mwh=0.02, name="S")
    if with_customers:
        net.load["customers"] = [250, np.nan, np.nan, np.nan]
    return net


def _grid(*, with_customers: bool = False) -> Grid:
    return from_pandapower(_net(with_customers=with_customers), name="t")


def _by_name(grid: Grid, counts: np.ndarray) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, count in zip(grid.names_of("sym_load"), counts, strict=True):
        out[str(name)] = out.get(str(name), 0) + int(count)
    return out


def test_energy_estimate_counts_split_loads_once_and_storage_zero() -> None:
    grid = _grid()
    counts = customer_counts(grid)
    assert (grid.names_of("sym_load") == "B").sum() == 2  # the split really happened
    assert _by_name(grid, counts) == {"A": 18, "B": 9, "C": 0, "D": 1, "S": 0}
    # the parts of B: the count sits on one row only
    assert sorted(counts[grid.names_of("sym_load") == "B"].tolist()) == [0, 9]


def test_kwh_per_customer_scales_estimate() -> None:
    grid = _grid()
    counts = customer_counts(grid, kwh_per_customer=61_320.0)
    assert _by_name(grid, counts)["A"] == 1
    with pytest.raises(InputError, match="kwh_per_customer"):
        customer_counts(grid, kwh_per_customer=0.0)


def test_source_column_wins_over_configuration_and_estimate() -> None:
    grid = _grid(with_customers=True)
    counts = customer_counts(grid, configured={"A": 3, "C": 7})
    named = _by_name(grid, counts)
    assert named["A"] == 250  # from the source
    assert named["C"] == 7  # from configuration
    assert named["B"] == 9  # estimated


def test_negative_source_count_is_refused() -> None:
    net = _net(with_customers=True)
    net.load.loc[0, "customers"] = -4
    with pytest.raises(InputError, match="load A"):
        customer_counts(from_pandapower(net, name="t"))


@pytest.mark.parametrize(
    ("configured", "match"),
    [({"nope": 3}, "'nope'"), ({"A": -1}, "'A'"), ({"A": 2.5}, "'A'"), ({"A": "many"}, "'A'")],
)
def test_bad_configuration_names_the_load(configured: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        customer_counts(_grid(), configured=configured)


def test_profile_year_energy_is_used() -> None:
    grid = _grid()
    loads = grid.component("sym_load")
    steps = 366 * 24
    time = np.datetime64("2016-01-01T00:00", "s") + np.arange(steps) * np.timedelta64(3600, "s")
    # one profile column, mean 0.5: A's profile-based energy is half its base-case energy
    values = np.tile([[0.0], [1.0]], (steps // 2, 1))
    column = np.where(grid.names_of("sym_load") == "A", 0, -1).astype(np.int64)
    assignment = ProfileAssignment("sym_load", "p_specified", loads["id"], column, loads["p_specified"].copy())
    with_profile = replace(grid, profiles=Profiles(time, values, ("p",), (assignment,)))
    assert _by_name(grid, customer_counts(with_profile))["A"] == 9  # 30,660 kWh / 3,500 = 8.76
    # a profile shorter than a year is not used
    short = replace(grid, profiles=Profiles(time[:48], values[:48], ("p",), (assignment,)))
    assert _by_name(grid, customer_counts(short))["A"] == 18


def test_customers_by_node_sums_loads() -> None:
    grid = _grid(with_customers=True)
    counts = customer_counts(grid)
    per_node = customers_by_node(grid, counts)
    names = grid.names_of("node")
    assert dict(zip(names.tolist(), per_node.tolist(), strict=True)) == {"b0": 0, "b1": 250, "b2": 9, "b3": 1}
    with pytest.raises(InputError):
        customers_by_node(grid, counts[:-1])

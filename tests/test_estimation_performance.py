"""What makes state estimation fast costs it nothing: the accuracy-derived tolerance, kept models, the
remembered de-energised check.

Tolerance. The estimator's iteration tolerance follows the measurement accuracy. References: the
true state is a power flow (an independent calculation of the same physics); the estimate at the
accuracy-derived tolerance is compared with the estimate at 1e-8 (the old default,
power-grid-model's own) against that truth, on a long synthetic feeder where the iterative linear
estimator converges slowest (the 100,000-node feeder of ``benchmarks/bench_feeders.py``: 69
iterations at 1e-8, 50 at 1e-6). Margins:

- the RMS error against the true voltages (complex, p.u.) and against the true line loadings may
  grow by at most 1 % (measured 0.6 % for both; the magnitude error by 0.1 %; at 1e-5 they would
  grow by 5.7 % and 5.8 %);
- the two estimates differ by at most 3.3 times the tolerance (the bound stated in
  :mod:`opendso.calc.estimation`; measured 3.28 on this feeder).

Kept models. An estimation on a kept model (updated with new values) equals, bit for bit, the
estimation on a model built afresh; a model is never reused for a grid changed in place or for
sensors with other ids, places or missing fields.
"""

from __future__ import annotations

import numpy as np
import pytest
from power_grid_model import LoadGenType, initialize_array

from opendso.calc import (
    EstimationResult,
    estimation,
    measurements_from_power_flow,
    place_measurements,
    run_power_flow,
    run_state_estimation,
)
from opendso.calc.estimation import (
    TOLERANCE_MAX_PU,
    TOLERANCE_MIN_PU,
    TOLERANCE_PER_VOLTAGE_SIGMA,
    estimation_tolerance,
)
from opendso.calc.model_cache import ModelCache
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology

#: The margins of the module docstring.
RMS_GROWTH_MAX = 0.01
ITERATION_ERROR_PER_TOLERANCE = 3.3


def feeder(n_nodes: int, load_w: float) -> Grid:
    """A 10 kV radial feeder built like ``bench_feeders.build_feeder``: a trunk of about sqrt(n) nodes,
    a lateral off every trunk node, 50 m cable segments, a load on every node but the source's."""
    n = n_nodes - 1
    trunk = max(1, round(np.sqrt(n)))
    lateral_sizes = np.diff(np.linspace(0, n - trunk, trunk + 1).round().astype(np.int64))
    parent = np.empty(n_nodes, dtype=np.int64)
    parent[0] = -1
    parent[1 : trunk + 1] = np.arange(0, trunk)
    first = trunk + 1 + np.concatenate([[0], np.cumsum(lateral_sizes)[:-1]])
    lateral_of = np.repeat(np.arange(trunk), lateral_sizes)
    position = np.arange(n - trunk) - np.repeat(first - trunk - 1, lateral_sizes)
    lateral_nodes = np.arange(trunk + 1, n_nodes)
    parent[lateral_nodes] = np.where(position == 0, lateral_of + 1, lateral_nodes - 1)

    node = initialize_array("input", "node", n_nodes)
    node["id"] = np.arange(n_nodes)
    node["u_rated"] = 10e3
    line = initialize_array("input", "line", n)
    line["id"] = n_nodes + np.arange(n)
    line["from_node"], line["to_node"] = parent[1:], np.arange(1, n_nodes)
    line["from_status"] = line["to_status"] = 1
    line["r1"], line["x1"], line["c1"], line["tan1"], line["i_n"] = 0.0103, 0.004, 15e-9, 0.0, 400.0
    source = initialize_array("input", "source", 1)
    source["id"], source["node"], source["status"], source["u_ref"], source["sk"] = 2 * n_nodes, 0, 1, 1.0, 1e12
    load = initialize_array("input", "sym_load", n)
    load["id"] = 2 * n_nodes + 1 + np.arange(n)
    load["node"], load["status"], load["type"] = np.arange(1, n_nodes), 1, LoadGenType.const_power
    load["p_specified"], load["q_specified"] = load_w, 0.3 * load_w
    data = {"node": node, "line": line, "source": source, "sym_load": load}
    return Grid(
        name=f"feeder-{n_nodes}", input=data, names={c: a["id"].astype(str).astype(object) for c, a in data.items()}
    )


def _voltage_meters(grid: Grid, sigma_pu: list[float]) -> dict[str, np.ndarray]:
    vs = initialize_array("input", "sym_voltage_sensor", len(sigma_pu))
    vs["id"] = grid.max_id + 1 + np.arange(len(sigma_pu))
    vs["measured_object"] = grid.component("node")["id"][: len(sigma_pu)]
    vs["u_sigma"] = np.asarray(sigma_pu) * 10e3
    vs["u_measured"] = 10e3
    return {"sym_voltage_sensor": vs}


# -- the rule ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> Grid:
    return feeder(200, 300.0)


@pytest.mark.parametrize(
    ("sigmas_pu", "expected"),
    [
        ([0.005], 1e-6),  # the usual 0.5 % meter: the tolerance shown harmless below
        ([0.01, 0.005, 0.02], 1e-6),  # the most accurate meter decides
        ([0.0005], 1e-7),  # better meters, tighter tolerance
        ([1e-7], TOLERANCE_MIN_PU),  # never tighter than power-grid-model's default
        ([0.05], TOLERANCE_MAX_PU),  # never looser than what was shown harmless
    ],
)
def test_tolerance_follows_the_most_accurate_voltage_meter(
    small: Grid, sigmas_pu: list[float], expected: float
) -> None:
    assert estimation_tolerance(small, _voltage_meters(small, sigmas_pu)) == pytest.approx(expected, rel=1e-12)
    assert pytest.approx(1e-6) == TOLERANCE_PER_VOLTAGE_SIGMA * 0.005


def test_tolerance_ignores_unusable_sigmas_and_unknown_nodes(small: Grid) -> None:
    meas = _voltage_meters(small, [0.005, 0.005, 0.005, 0.005, 0.0001])
    vs = meas["sym_voltage_sensor"]
    vs["u_sigma"][1], vs["u_sigma"][2], vs["u_sigma"][3] = np.nan, 0.0, -1.0
    vs["measured_object"][4] = 10**6  # a node that does not exist: power-grid-model will say so
    assert estimation_tolerance(small, meas) == pytest.approx(1e-6)
    vs["u_sigma"][:] = np.inf
    assert estimation_tolerance(small, meas) == TOLERANCE_MIN_PU
    assert estimation_tolerance(small, {}) == TOLERANCE_MIN_PU
    assert estimation_tolerance(small, {"sym_voltage_sensor": vs[:0]}) == TOLERANCE_MIN_PU


def test_result_says_which_tolerance_ran(small: Grid) -> None:
    truth = run_power_flow(small)
    meas = measurements_from_power_flow(small, truth, noise=1.0, placements=place_measurements(small))
    default = run_state_estimation(small, meas, normalise=False)
    assert default.converged, default.error
    assert default.error_tolerance == pytest.approx(1e-6)
    explicit = run_state_estimation(small, meas, normalise=False, error_tolerance=1e-9)
    assert explicit.error_tolerance == 1e-9
    assert "error_tolerance" not in default.to_dict()  # the JSON layout is unchanged


# -- the evidence: no accuracy lost where the estimator converges slowest ------------------------------


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.abs(a) ** 2)))


@pytest.mark.slow
def test_default_tolerance_costs_no_accuracy_on_the_100k_feeder() -> None:
    grid = feeder(100_000, 9.45)  # the benchmark's load per node
    truth = run_power_flow(grid)
    assert truth.converged, truth.error
    placements = place_measurements(grid, voltage_fraction=0.1, branch_fraction=0.1, rng=np.random.default_rng(1))
    meas = measurements_from_power_flow(grid, truth, noise=1.0, rng=np.random.default_rng(2), placements=placements)
    tight = run_state_estimation(grid, meas, error_tolerance=1e-8, normalise=False)
    default = run_state_estimation(grid, meas, normalise=False)
    assert tight.converged, tight.error
    assert default.converged, default.error
    assert default.error_tolerance == pytest.approx(1e-6)

    def phasor(output: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(output["node"]["u_pu"] * np.exp(1j * output["node"]["u_angle"]))

    true_u = phasor(truth.output)
    err_tight, err_default = phasor(tight.output) - true_u, phasor(default.output) - true_u
    print("RMS |U - U_true| (p.u.) at 1e-8", _rms(err_tight), "at default", _rms(err_default))
    assert _rms(err_default) <= (1 + RMS_GROWTH_MAX) * _rms(err_tight)
    mag_tight = tight.node_u_pu() - truth.node_u_pu()
    mag_default = default.node_u_pu() - truth.node_u_pu()
    assert _rms(mag_default) <= (1 + RMS_GROWTH_MAX) * _rms(mag_tight)
    # what an operator sees of the branches: loading (measured 0.6 % more RMS error)
    load_tight = tight.output["line"]["loading"] - truth.output["line"]["loading"]
    load_default = default.output["line"]["loading"] - truth.output["line"]["loading"]
    assert _rms(load_default) <= (1 + RMS_GROWTH_MAX) * _rms(load_tight)
    # the iteration error is what the module docstring states, far below the estimate's own error
    difference = float(np.abs(phasor(default.output) - phasor(tight.output)).max())
    assert difference <= ITERATION_ERROR_PER_TOLERANCE * default.error_tolerance
    assert difference < 0.05 * _rms(err_tight)


# -- the de-energised check is remembered, never stale ----------------------------------------------


def test_de_energised_check_follows_changes_in_place(small: Grid) -> None:
    grid = Grid(name="mutable", input={c: a.copy() for c, a in small.input.items()}, names=small.names)
    assert estimation._has_de_energised_nodes(grid) is False
    assert estimation._has_de_energised_nodes(grid) is False  # remembered
    grid.input["line"]["to_status"][5] = 0  # changed in place: a node falls dead
    assert not analyse_topology(grid).node_energised.all()
    assert estimation._has_de_energised_nodes(grid) is True
    grid.input["line"]["to_status"][5] = 1
    assert estimation._has_de_energised_nodes(grid) is False


# -- kept models ----------------------------------------------------------------------------------------


def _same(a: EstimationResult, b: EstimationResult) -> None:
    """Two results hold the same outputs and residuals, bit for bit (NaN where NaN)."""
    assert a.converged == b.converged
    assert a.error == b.error
    assert set(a.output) == set(b.output)
    for component, array in a.output.items():
        other = b.output[component]
        for name in array.dtype.names or ():
            np.testing.assert_array_equal(array[name], other[name], err_msg=f"{component}.{name}")
    for name in a.residuals.dtype.names or ():
        np.testing.assert_array_equal(a.residuals[name], b.residuals[name], err_msg=name)


def _noisy(grid: Grid, seed: int) -> dict[str, np.ndarray]:
    truth = run_power_flow(grid)
    placements = place_measurements(grid, voltage_fraction=0.3, branch_fraction=0.5, rng=np.random.default_rng(0))
    return measurements_from_power_flow(grid, truth, noise=1.0, rng=np.random.default_rng(seed), placements=placements)


def test_a_kept_model_estimates_what_a_fresh_one_does(small: Grid) -> None:
    estimation._MODELS.clear()
    for seed in range(3):  # the first call builds and keeps the model, the others update it
        meas = _noisy(small, seed)
        kept = run_state_estimation(small, meas)
        fresh = run_state_estimation(small, meas, reuse_model=False)
        assert kept.converged, kept.error
        _same(kept, fresh)
    unobservable = {"sym_voltage_sensor": _noisy(small, 9)["sym_voltage_sensor"]}
    for _ in range(2):
        _same(run_state_estimation(small, unobservable), run_state_estimation(small, unobservable, reuse_model=False))


def test_a_model_is_reused_only_for_the_same_grid_and_sensor_layout(small: Grid) -> None:
    cache = ModelCache(size=2)
    grid_input = {c: a.copy() for c, a in small.pgm_input().items()}
    meas = _noisy(small, 1)
    assert cache.take(grid_input, meas, 50.0) is None
    from opendso.calc.model_cache import KeptModel

    cache.keep(KeptModel.build(grid_input, meas, 50.0))
    other_values = _noisy(small, 2)  # same sensors, new values: reused
    kept = cache.take(grid_input, other_values, 50.0)
    assert kept is not None
    assert cache.take(grid_input, other_values, 50.0) is None  # taken out while in use
    cache.keep(kept)

    angle = {c: a.copy() for c, a in meas.items()}
    angle["sym_voltage_sensor"]["u_angle_measured"][0] = 0.0  # a field that was missing is now given
    assert cache.take(grid_input, angle, 50.0) is None
    moved = {c: a.copy() for c, a in meas.items()}
    moved["sym_voltage_sensor"]["measured_object"][0] = moved["sym_voltage_sensor"]["measured_object"][1]
    assert cache.take(grid_input, moved, 50.0) is None
    fewer = {"sym_voltage_sensor": meas["sym_voltage_sensor"]}
    assert cache.take(grid_input, fewer, 50.0) is None
    assert cache.take(grid_input, meas, 60.0) is None  # another system frequency

    grid_input["line"]["r1"][3] *= 2  # the grid changed in place: a stale model would be wrong
    assert cache.take(grid_input, meas, 50.0) is None
    grid_input["line"]["r1"][3] /= 2
    kept = cache.take(grid_input, meas, 50.0)
    assert kept is not None
    cache.keep(kept)


def test_a_grid_changed_in_place_is_estimated_afresh(small: Grid) -> None:
    grid = Grid(name="mutable", input={c: a.copy() for c, a in small.input.items()}, names=small.names)
    meas = _noisy(grid, 1)
    before = run_state_estimation(grid, meas)
    grid.input["line"]["r1"][:] *= 3
    after = run_state_estimation(grid, meas)
    _same(after, run_state_estimation(grid, meas, reuse_model=False))
    assert not np.array_equal(before.node_u_pu(), after.node_u_pu())


def test_the_cache_keeps_at_most_its_size_least_recently_used_out(small: Grid) -> None:
    from opendso.calc.model_cache import KeptModel

    cache = ModelCache(size=2)
    grid_input = small.pgm_input()
    layouts = [{"sym_voltage_sensor": _noisy(small, 1)["sym_voltage_sensor"][:k]} for k in (3, 4, 5)]
    for meas in layouts:
        cache.keep(KeptModel.build(grid_input, meas, 50.0))
    assert cache.take(grid_input, layouts[0], 50.0) is None  # the oldest went
    assert cache.take(grid_input, layouts[1], 50.0) is not None
    assert cache.take(grid_input, layouts[2], 50.0) is not None
    off = ModelCache(size=0)
    off.keep(KeptModel.build(grid_input, layouts[0], 50.0))
    assert off.take(grid_input, layouts[0], 50.0) is None


def test_a_model_whose_update_fails_is_dropped(small: Grid, monkeypatch: pytest.MonkeyPatch) -> None:
    from power_grid_model.errors import PowerGridError

    from opendso.calc.model_cache import KeptModel

    cache = ModelCache(size=2)
    grid_input = small.pgm_input()
    meas = _noisy(small, 1)
    kept = KeptModel.build(grid_input, meas, 50.0)

    def refuse(**_: object) -> None:
        raise PowerGridError("refused")

    monkeypatch.setattr(kept.model, "update", refuse)
    cache.keep(kept)
    assert cache.take(grid_input, meas, 50.0) is None
    assert cache.take(grid_input, meas, 50.0) is None  # gone for good


def test_concurrent_estimations_never_share_a_model(small: Grid) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sets = [_noisy(small, seed) for seed in range(6)]
    expected = [run_state_estimation(small, m, reuse_model=False) for m in sets]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda m: run_state_estimation(small, m), sets * 3))
    for k, result in enumerate(got):
        _same(result, expected[k % len(sets)])

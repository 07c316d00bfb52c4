"""Benchmark 3: OpenDSO's overhead over calling power-grid-model directly, on a small grid where it shows most.

On SimBench ``1-MV-urban--0-sw`` (144 nodes), each OpenDSO call is timed against the plain
power-grid-model call on the same input, many times (medians):

- one power flow: ``run_power_flow`` against ``PowerGridModel(input).calculate_power_flow()``
  (Newton-Raphson, full output, model construction on both sides);
- one state estimation on the grid's own measurement placements filled from a power flow:
  ``run_state_estimation(normalise=False)`` building its model (``reuse_model=False``) against
  ``calculate_state_estimation`` at the same tolerance (the one OpenDSO derives from the
  measurement accuracy), and the same call repeated on its kept model, as a real-time cycle runs it;
- a day of quarter-hours (96 steps) and 4,096 steps as a time series: ``run_time_series``
  against one batch call with the same method and outputs, update data built once with numpy
  (so the ratio holds OpenDSO's update building, retries check and per-step summary);
- the update data itself: ``Profiles.update_data`` against plain numpy indexing.

The large-grid overheads are in ``bench_year.py`` and ``bench_feeders.py``; ``run_all.py`` prints
them all in its summary.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from _util import Target, fmt_ratio, fmt_s, print_table, quiet_warnings, time_it, write_report
from bench_year import DirectProfiles, wanted_outputs

CODE = "1-MV-urban--0-sw"


def main(argv: list[str] | None = None) -> int:
    """Run the overhead measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--json", help="write the ratios to this file (for run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()

    from power_grid_model import CalculationMethod, PowerGridModel

    from opendso.calc import measurements_from_power_flow, run_power_flow, run_state_estimation, run_time_series
    from opendso.grid import from_pandapower
    from opendso.grid.sources import load_simbench_net

    repeats = 5 if args.quick else 51
    ts_repeats = 3 if args.quick else 11
    net = load_simbench_net(CODE)
    grid = from_pandapower(net, name=f"simbench:{CODE}")
    rows: list[list[str]] = []
    info: list[list[str]] = []

    def compare(label: str, ours: Any, theirs: Any, n: int) -> None:
        t_ours, _ = time_it(ours, repeats=n, warmup=2)
        t_theirs, _ = time_it(theirs, repeats=n, warmup=2)
        ratio = t_ours.median / t_theirs.median
        rows.append([label, fmt_s(t_ours.median), fmt_s(t_theirs.median), fmt_ratio(ratio), str(n)])
        info.append(
            [f"MV-urban overhead: {label}", fmt_ratio(ratio), f"{fmt_s(t_ours.median)} vs {fmt_s(t_theirs.median)}"]
        )

    compare(
        "power flow (NR, full output)",
        lambda: run_power_flow(grid),
        lambda: PowerGridModel(grid.pgm_input(), system_frequency=50.0).calculate_power_flow(
            calculation_method=CalculationMethod.newton_raphson, error_tolerance=1e-8, max_iterations=30
        ),
        repeats,
    )

    truth = run_power_flow(grid)
    measurements = measurements_from_power_flow(grid, truth, noise=1.0, rng=np.random.default_rng(0))
    data = grid.pgm_input()
    data.update(measurements)
    tolerance = run_state_estimation(grid, measurements, normalise=False).error_tolerance

    def pgm_estimation() -> Any:
        return PowerGridModel(data, system_frequency=50.0).calculate_state_estimation(
            calculation_method=CalculationMethod.iterative_linear, error_tolerance=tolerance, max_iterations=100
        )

    compare(
        "state estimation (iterative linear)",
        lambda: run_state_estimation(grid, measurements, normalise=False, reuse_model=False),
        pgm_estimation,
        repeats,
    )
    compare(
        "state estimation, model kept",
        lambda: run_state_estimation(grid, measurements, normalise=False),
        pgm_estimation,
        repeats,
    )

    direct = DirectProfiles(net, grid)
    wanted = wanted_outputs(grid)
    for steps in (96, 4096):
        update = direct.update(0, steps)

        def plain(update: dict[str, Any] = update) -> Any:
            model = PowerGridModel(grid.pgm_input(), system_frequency=50.0)
            return model.calculate_power_flow(
                update_data=update,
                threading=0,
                output_component_types=wanted,  # type: ignore[arg-type]
                calculation_method=CalculationMethod.iterative_current,
                error_tolerance=1e-8,
                max_iterations=30,
            )

        compare(
            f"time series, {steps} steps (iterative current)",
            lambda steps=steps: run_time_series(grid, start=0, stop=steps, chunk_size=steps),
            plain,
            ts_repeats,
        )

    assert grid.profiles is not None
    ids = {c: grid.component(c)["id"] for c in ("sym_load", "sym_gen")}
    profiles = grid.profiles
    compare(
        "update data, 4096 steps",
        lambda: profiles.update_data(0, 4096, input_ids=ids),
        lambda: direct.update(0, 4096),
        repeats,
    )

    print_table(
        f"OpenDSO against power-grid-model called directly on {CODE} (medians)",
        ["call", "OpenDSO", "power-grid-model", "ratio", "repeats"],
        rows,
    )
    print("  The time-series rows hold what OpenDSO adds per step: update building from the profiles,")
    print("  the retry check and the per-step summary (minimum/maximum voltage, loading, violations).")
    targets: list[Target] = []
    write_report(args.json, "overhead", targets, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())

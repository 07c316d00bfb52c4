"""Benchmark: active network management's decision time per cycle on SimBench MV grids.

Every generator of the grid is a flexible connection (last-in-first-off, in grid order), the
state is the power flow at the step of the year's largest generation (as a perfect estimate), and
the worst-loaded branch gets a trigger just under its loading, so every cycle measured finds a
constraint and curtails: export sensitivities of every DER (one batch power flow of
power-grid-model, DER + 1 scenarios), the DER behind it, their order and their limits. The
set-point arbiter is a stub that takes every limit (the sending is measured by the set-point
and FLISR benchmarks); the figure is the controller's own work per cycle, against the real-time
cycle's 2 s period.

Run ``python benchmarks/bench_anm.py`` (``--quick`` for one grid). Under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np
from _util import Target, fmt_s, print_table, quiet_warnings, time_it, write_report

GRIDS = ("1-MV-rural--0-sw", "1-MV-semiurb--0-sw", "1-MV-urban--0-sw")
PERIOD_S = 2.0  # the real-time cycle's default period


class StubArbiter:
    """Takes every limit at once (no field): what ANM's decision costs without the sending."""

    dispatcher: Any = None

    def __init__(self) -> None:
        self.limits: dict[str, float | None] = {}

    def effective(self, point: str) -> tuple[float | None, Any]:
        return self.limits.get(point), None

    async def submit(self, request: Any) -> Any:
        self.limits[request.point] = request.limit_w
        return _Outcome()

    async def release(self, source: Any, point: str, *, reason: str) -> Any:
        self.limits[point] = None
        return _Outcome()

    async def refresh(self, now: datetime | None = None) -> list[Any]:
        return []


class _Outcome:
    status = "sent"
    rule = None
    reason = ""


def case(code: str) -> dict[str, Any]:
    """Decision time of one cycle with a constraint on ``code`` at its year's largest generation."""
    from opendso.calc import EstimationMethod, run_power_flow
    from opendso.calc.estimation import EstimationResult
    from opendso.calc.vvo import grid_at_step
    from opendso.der import AccessPrinciple, Agreement, AgreementKind, AssetKind, DerAsset
    from opendso.der.anm import AnmController, AnmDer, AnmSettings
    from opendso.der.anm_sensitivity import branch_names, export_sensitivities
    from opendso.grid import load_grid
    from opendso.operations.cycle import CycleResult

    grid = load_grid(f"simbench:{code}")
    assert grid.profiles is not None
    gen = grid.profiles.update_data(0, grid.profiles.steps)["sym_gen"]["p_specified"].sum(axis=1)
    step = int(np.argmax(gen))
    state = grid_at_step(grid, step)
    pf = run_power_flow(state)
    names = [str(n) for n in state.names_of("sym_gen")]
    p = state.component("sym_gen")["p_specified"]
    ders = []
    for k, name in enumerate(names):
        kw = max(float(p[k]) / 1e3, 1.0)
        asset = DerAsset(
            f"G{k}",
            name[:200],
            AssetKind.PV,
            "n",
            "owner",
            export_kw=kw,
            agreement=Agreement(AgreementKind.FLEXIBLE, AccessPrinciple.LIFO, 5.0, 0.0),
        )
        ders.append(AnmDer(asset, f"{name}/p_limit", name, k))
    loading = np.concatenate([pf.output[c]["loading"] for c in ("line", "transformer") if state.count(c)])
    worst = int(np.argmax(loading))
    element = branch_names(state)[worst]
    top = float(loading[worst])
    settings = AnmSettings(element_triggers={element: min(0.98 * top, 1.0)})
    est = EstimationResult(state, True, True, EstimationMethod.ITERATIVE_LINEAR, {}, output=pf.output)
    result = CycleResult(datetime.now(UTC), est, pf.output["node"]["energized"].astype(bool), [])

    def one_cycle() -> AnmController:
        controller = AnmController(StubArbiter(), ders, settings=settings)  # type: ignore[arg-type]
        asyncio.run(controller.step(result))
        return controller

    timing, controller = time_it(one_cycle, repeats=5, warmup=1)
    sens_timing, _ = time_it(lambda: export_sensitivities(state, names, output=pf.output), repeats=5, warmup=1)
    curtailed = sum(1 for d in ders if controller.limit(d.point) is not None)
    return {
        "grid": code,
        "nodes": state.count("node"),
        "ders": len(ders),
        "element": element,
        "loading": top,
        "cycle_s": timing.median,
        "decision_s": controller.stats.decision_ms / 1e3,
        "sensitivities_s": sens_timing.median,
        "curtailed": curtailed,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one grid")
    parser.add_argument("--json", help="write the report here (run_all.py)")
    args = parser.parse_args(argv)
    quiet_warnings()
    rows = [case(code) for code in (GRIDS[:1] if args.quick else GRIDS)]
    print_table(
        "ANM: one cycle with a constraint (sensitivities, order, limits), median of 5",
        ["grid", "nodes", "DER", "constraint", "loading", "cycle", "sensitivities", "DER curtailed"],
        [
            [
                r["grid"],
                r["nodes"],
                r["ders"],
                r["element"][:30],
                f"{r['loading']:.2f}",
                fmt_s(r["cycle_s"]),
                fmt_s(r["sensitivities_s"]),
                r["curtailed"],
            ]
            for r in rows
        ],
    )
    worst = max(r["cycle_s"] for r in rows)
    targets = [
        Target("ANM decision per cycle (worst grid)", worst, 0.25 * PERIOD_S, "max", "s", "a quarter of the period")
    ]
    write_report(args.json, "anm", targets, [[r["grid"], fmt_s(r["cycle_s"])] for r in rows])
    return 0 if all(t.passed is not False for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())

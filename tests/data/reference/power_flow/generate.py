"""Regenerate the expected results of the balanced power-flow reference cases with pandapower.

Run from the repository root: ``.venv/bin/python tests/data/reference/power_flow/generate.py [case ...]``.
Each case folder holds ``params.json`` (the grid source and tolerances); this script writes
``expected.json`` from pandapower's Newton-Raphson power flow on the same source data. The
only change made to the source data is the one pandapower needs to use the transformer taps
SimBench gives (``tap_changer_type = "Ratio"``; SimBench leaves it empty and pandapower 3.x then
ignores the tap position).

A case whose ``params.json`` has ``derived_from`` keeps a modified copy of a published grid as
``net.json``; this script writes that file first: ``{"simbench": code, "scaling": factor, "drop":
[table, ...]}`` loads the SimBench grid, multiplies the ``scaling`` of every load, static
generator and generator by ``factor`` and empties the listed tables.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pandapower as pp

HERE = Path(__file__).resolve().parent


def load_net(source: str, folder: Path) -> pp.pandapowerNet:
    scheme, _, arg = source.partition(":")
    if scheme == "simbench":
        import simbench

        return simbench.get_simbench_net(arg)
    if scheme == "pandapower":
        return pp.from_json(str(folder / arg))
    raise ValueError(source)


def derive(folder: Path, recipe: dict) -> None:
    import simbench

    net = simbench.get_simbench_net(recipe["simbench"])
    for table in ("load", "sgen", "gen"):
        net[table]["scaling"] = net[table]["scaling"] * recipe.get("scaling", 1.0)
    for table in recipe.get("drop", []):
        net[table] = {} if table == "profiles" else net[table].iloc[0:0]
    pp.to_json(net, str(folder / "net.json"))


def generate(folder: Path) -> None:
    params = json.loads((folder / "params.json").read_text())
    if "derived_from" in params:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            derive(folder, params["derived_from"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_net(params["source"], folder)
        if len(net.trafo):
            net.trafo["tap_changer_type"] = "Ratio"
        pp.runpp(
            net,
            algorithm="nr",
            trafo_loading="power",
            tolerance_mva=params.get("reference_tolerance_mva", 1e-9),
            max_iteration=50,
            calculate_voltage_angles=True,
            init="dc",
        )
    expected = {
        "tool": f"pandapower {pp.__version__}",
        "bus": {
            "index": net.bus.index.tolist(),
            "name": net.bus.name.astype(str).tolist(),
            "vm_pu": net.res_bus.vm_pu.round(12).tolist(),
            "va_degree": net.res_bus.va_degree.round(10).tolist(),
        },
        "line": {"index": net.line.index.tolist(), "loading": (net.res_line.loading_percent / 100).round(12).tolist()},
        "trafo": {
            "index": net.trafo.index.tolist(),
            "loading": (net.res_trafo.loading_percent / 100).round(12).tolist(),
        },
    }
    (folder / "expected.json").write_text(json.dumps(expected, allow_nan=True) + "\n")
    print(f"{folder.name}: {len(net.bus)} buses written")


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.name for p in HERE.iterdir() if (p / "params.json").is_file())
    for name in names:
        generate(HERE / name)

"""Solve every unbalanced power-flow reference case with pandapower's ``runpp_3ph``.

Run with the project's virtualenv: ``.venv/bin/python tests/data/reference/power_flow_asym/generate_expected.py``.
A case is a folder holding ``params.json``: ``network`` names a function of
``pandapower.networks`` and ``args`` its arguments; ``trafo_overrides`` (optional) sets columns
of ``net.trafo`` before solving. The expected file holds, per bus name, the voltage magnitude
of phases a, b and c in p.u., as ``runpp_3ph`` reports them (``res_bus_3ph``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pandapower
import pandapower.networks

HERE = Path(__file__).resolve().parent


def build_net(params: dict[str, Any]) -> Any:
    """Return the pandapower network of a case, with the case's overrides applied."""
    net = getattr(pandapower.networks, params["network"])(*params.get("args", []))
    for column, value in params.get("trafo_overrides", {}).items():
        net.trafo[column] = value
    return net


def solve_case(folder: Path) -> dict[str, Any]:
    """Return the expected results of one case, solved by pandapower's runpp_3ph."""
    params = json.loads((folder / "params.json").read_text())
    net = build_net(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pandapower.runpp_3ph(net, max_iteration=100)
    res = net.res_bus_3ph
    return {
        "generator": "tests/data/reference/power_flow_asym/generate_expected.py",
        "engine": f"pandapower {pandapower.__version__} runpp_3ph",
        "u_pu": {
            str(name): [float(res.at[idx, f"vm_{ph}_pu"]) for ph in "abc"]
            for idx, name in zip(net.bus.index, net.bus["name"], strict=True)
        },
    }


def main() -> None:
    for params in sorted(HERE.glob("*/params.json")):
        folder = params.parent
        expected = solve_case(folder)
        (folder / "expected.json").write_text(json.dumps(expected, indent=0, sort_keys=True) + "\n")
        print(f"{folder.name}: {len(expected['u_pu'])} buses")


if __name__ == "__main__":
    main()

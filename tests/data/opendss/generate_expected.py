"""Solve every OpenDSS reference case with the OpenDSS engine and write its expected.json.

Run from anywhere with the project's virtualenv: ``.venv/bin/python tests/data/opendss/generate_expected.py``.
A case is a folder holding ``params.json`` (with ``"master"``, the file to compile, and
``"engine_tolerance"``); the engine is opendssdirect.py (DSS C-API), independent of OpenDSO.
The expected file holds, per bus, the voltage magnitude of every phase node (1, 2, 3) in p.u.
of the bus's voltage base, as OpenDSS reports it (``Bus.puVmagAngle``).
"""

from __future__ import annotations

import json
from pathlib import Path

import opendssdirect

HERE = Path(__file__).resolve().parent


def solve_case(folder: Path) -> dict[str, object]:
    """Return the expected results of one case, solved by the OpenDSS engine."""
    params = json.loads((folder / "params.json").read_text())
    dss = opendssdirect.NewContext()
    dss.Basic.AllowChangeDir(False)
    dss.Text.Command(f'Compile "{folder / params["master"]}"')
    dss.Text.Command(f"Set Tolerance={params['engine_tolerance']}")
    dss.Text.Command("Set Maxiterations=100")
    dss.Solution.Solve()
    if not dss.Solution.Converged():
        raise RuntimeError(f"{folder.name}: OpenDSS did not converge")
    buses: dict[str, dict[str, float]] = {}
    for name in dss.Circuit.AllBusNames():
        dss.Circuit.SetActiveBus(name)
        magnitudes = dss.Bus.puVmagAngle()[0::2]
        buses[str(name)] = {
            str(n): float(v) for n, v in zip(dss.Bus.Nodes(), magnitudes, strict=True) if n in (1, 2, 3)
        }
    return {
        "generator": "tests/data/opendss/generate_expected.py",
        "engine": str(dss.Basic.Version()).splitlines()[0],
        "iterations": int(dss.Solution.Iterations()),
        "u_pu": buses,
    }


def main() -> None:
    for params in sorted(HERE.glob("*/params.json")):
        folder = params.parent
        expected = solve_case(folder)
        (folder / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
        print(f"{folder.name}: {len(expected['u_pu'])} buses")


if __name__ == "__main__":
    main()

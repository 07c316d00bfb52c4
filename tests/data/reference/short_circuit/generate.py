"""Generate expected.json for every short-circuit reference case with pandapower's ``calc_sc``.

Run from the repository root: ``.venv/bin/python tests/data/reference/short_circuit/generate.py``
(optionally with case folder names to regenerate only those).

Each case folder holds a ``params.json``:

- ``source``: ``simbench:<code>`` or ``pandapower.networks:<function>``;
- ``ext_grid``: short-circuit data written into pandapower's ext_grid table *before* the
  network is converted, so that both tools see the same source data (empty: the grid's own);
- ``pandapower_ext_grid_defaults``: values pandapower gets for short-circuit data the grid
  lacks (OpenDSO's documented defaults), applied after conversion so OpenDSO still takes its
  own fallback path;
- ``line_end_temperature_c``: line end temperature for minimum currents (both tools);
- ``studies``: fault type, case and low-voltage tolerance of each calculation;
- ``rtol``/``atol_ka``: the tolerance the test applies.

pandapower is set up to compute the same IEC 60909 case as OpenDSO: equivalent voltage
source at the fault (no pre-fault load flow), static generators out of service (OpenDSO does
not model generator contributions), ``endtemp_degree`` on every line, and ``lv_tol_percent``
from the study. Everything else is pandapower's default (K_T applied in the maximum case,
rated transformer ratios, line capacitance and loads neglected).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

#: OpenDSO fault type names -> pandapower's.
PP_FAULT = {"three_phase": "3ph", "phase_to_phase": "2ph", "single_phase_to_ground": "1ph"}


def case_dirs() -> list[Path]:
    """Every case folder (a folder holding params.json), sorted by name."""
    return sorted(p.parent for p in HERE.glob("*/params.json"))


def load_params(case_dir: Path) -> dict[str, Any]:
    """Return the params.json of a case."""
    params: dict[str, Any] = json.loads((case_dir / "params.json").read_text())
    return params


def load_case_net(params: dict[str, Any]) -> Any:
    """Return the case's pandapower network with the case's ext_grid data written in (both tools start here)."""
    scheme, _, argument = params["source"].partition(":")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if scheme == "simbench":
            from opendso.grid.sources import load_simbench_net

            net = load_simbench_net(argument)
        elif scheme == "pandapower.networks":
            import pandapower.networks as pn

            net = getattr(pn, argument)()
        else:
            raise ValueError(f"unknown case source {params['source']}")
    for key, value in params.get("ext_grid", {}).items():
        net.ext_grid[key] = value
    return net


def reference_net(params: dict[str, Any]) -> Any:
    """Return the network set up for pandapower's calc_sc (see the module docstring)."""
    net = load_case_net(params)
    for key, value in params.get("pandapower_ext_grid_defaults", {}).items():
        if key not in net.ext_grid.columns:
            net.ext_grid[key] = value
        else:
            net.ext_grid[key] = net.ext_grid[key].astype(float).fillna(value)
    net.sgen["in_service"] = False
    net.line["endtemp_degree"] = float(params["line_end_temperature_c"])
    return net


def generate(case_dir: Path) -> None:
    """Write expected.json of one case."""
    import pandapower.shortcircuit as sc

    params = load_params(case_dir)
    net = reference_net(params)
    names = net.bus["name"].astype(str)
    if not names.is_unique:
        raise ValueError(f"{case_dir.name}: bus names are not unique")
    studies = []
    for study in params["studies"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.calc_sc(
                net,
                fault=PP_FAULT[study["fault_type"]],
                case=study["case"],
                lv_tol_percent=study["lv_tolerance_percent"],
            )
        ikss = net.res_bus_sc["ikss_ka"].reindex(net.bus.index).to_numpy(dtype=float)
        studies.append(
            {
                **study,
                "ik_ka": {
                    name: (None if not np.isfinite(v) else float(v)) for name, v in zip(names, ikss, strict=True)
                },
            }
        )
    import pandapower

    expected = {"generated_by": f"pandapower {pandapower.__version__} shortcircuit.calc_sc", "studies": studies}
    (case_dir / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


def main(argv: list[str]) -> None:
    """Regenerate the named cases, or all of them."""
    dirs = [HERE / name for name in argv] if argv else case_dirs()
    for case_dir in dirs:
        generate(case_dir)
        print(f"wrote {case_dir.relative_to(HERE)}/expected.json")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Time series: profiles scaled like SimBench's own tool, results like pandapower at sampled steps."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandapower as pp
import pyarrow.parquet as pq
import simbench

from opendso.calc import ParquetWriter, run_time_series
from opendso.grid import from_pandapower

CODE = "1-LV-semiurb4--0-sw"
STEPS = (0, 1234, 17000, 35135)


def _net() -> pp.pandapowerNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simbench.get_simbench_net(CODE)


def test_profiles_scale_like_simbench_get_absolute_values() -> None:
    net = _net()
    grid = from_pandapower(net, name=CODE)
    assert grid.profiles is not None
    absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    update = grid.profiles.update_data(0, 35136, input_ids={"sym_load": grid.input["sym_load"]["id"]})
    loads = grid.extra["sym_load"]["source_index"]
    np.testing.assert_allclose(update["sym_load"]["p_specified"], absolute[("load", "p_mw")][loads].to_numpy() * 1e6)
    np.testing.assert_allclose(update["sym_load"]["q_specified"], absolute[("load", "q_mvar")][loads].to_numpy() * 1e6)
    gens = grid.extra["sym_gen"]["source_index"]
    np.testing.assert_allclose(update["sym_gen"]["p_specified"], absolute[("sgen", "p_mw")][gens].to_numpy() * 1e6)


def test_time_series_matches_pandapower_at_sampled_steps(tmp_path: Path) -> None:
    net = _net()
    grid = from_pandapower(net, name=CODE)
    out = tmp_path / "year.parquet"
    result = run_time_series(grid, writer=ParquetWriter(out, grid, components=("node",)), chunk_size=4096)
    assert result.converged.all()
    table = pq.read_table(out, filters=[("step", "in", list(STEPS))]).to_pandas()

    absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    net.trafo["tap_changer_type"] = "Ratio"
    node_source = dict(zip(grid.component("node")["id"], grid.extra["node"]["source_index"], strict=True))
    for step in STEPS:
        net.load["p_mw"] = absolute[("load", "p_mw")].loc[step]
        net.load["q_mvar"] = absolute[("load", "q_mvar")].loc[step]
        net.sgen["p_mw"] = absolute[("sgen", "p_mw")].loc[step]
        pp.runpp(net, tolerance_mva=1e-9, calculate_voltage_angles=True, trafo_loading="power")
        rows = table[table.step == step]
        ours = rows.value.to_numpy()
        ref = net.res_bus.vm_pu.loc[[node_source[i] for i in rows.id]].to_numpy()
        assert np.max(np.abs(ours - ref)) < 1e-5, step
        assert result.u_min_pu[step] == ours.min()
        assert result.u_max_pu[step] == ours.max()
        ref_loading = max(net.res_line.loading_percent.max(), net.res_trafo.loading_percent.max()) / 100
        assert abs(result.max_loading[step] - ref_loading) < 1e-4, step

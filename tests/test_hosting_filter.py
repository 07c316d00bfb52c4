"""The hosting-capacity margin filter: the same answers as the exact every-step check, with steps skipped."""

from __future__ import annotations

import logging
import re

import pytest
from test_hosting_capacity import _feasible_brute, _model_with_extra, _violations_at

from opendso.calc.hc_dask import run_hosting_capacity
from opendso.calc.hosting_capacity import ACCURACY_FRACTION, ACCURACY_MW, MARGIN_FILTER, hosting_capacity
from opendso.calc.timeseries import ViolationLimits
from opendso.errors import InputError
from opendso.grid import Grid, load_grid

LV = "simbench:1-LV-rural1--0-sw"


@pytest.fixture(scope="module")
def lv() -> Grid:
    return load_grid(LV)


@pytest.fixture(scope="module")
def demo() -> Grid:
    return load_grid("demo")


def _skipped(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """Sum of the (judged, skipped) step counts the chunks logged."""
    judged = skipped = 0
    for record in caplog.records:
        found = re.search(r"event=hc_chunk .*step_checks=(\d+) steps_skipped=(\d+)", record.getMessage())
        if found:
            judged += int(found.group(1))
            skipped += int(found.group(2))
    return judged, skipped


@pytest.mark.parametrize(
    ("source", "steps", "rows", "limits"),
    [
        # LV: tight limits so that voltage and thermal limits both bind, over four days
        (LV, 384, (1, 4, 7, 10, 13), ViolationLimits(u_min_pu=0.95, u_max_pu=1.04, loading_max=0.6)),
        # MV + LV (the demo grid): MV and LV nodes, default limits, over three days
        ("demo", 288, (0, 60, 150, 200, 224), ViolationLimits()),
    ],
)
def test_filter_gives_the_exact_answers_and_skips_steps(
    caplog: pytest.LogCaptureFixture,
    lv: Grid,
    demo: Grid,
    source: str,
    steps: int,
    rows: tuple[int, ...],
    limits: ViolationLimits,
) -> None:
    grid = lv if source == LV else demo
    from opendso.calc.hosting_capacity import resolve_nodes

    ids = resolve_nodes(grid, None)
    names = [str(n) for n in grid.names_of("node")[grid.node_positions(ids[list(rows)])]]
    exact = hosting_capacity(grid, nodes=names, steps=steps, limits=limits)
    with caplog.at_level(logging.DEBUG, logger="opendso.calc.hosting_capacity"):
        fast = hosting_capacity(grid, nodes=names, steps=steps, limits=limits, margin_filter=MARGIN_FILTER)
    assert fast.to_dict() == exact.to_dict()
    judged, skipped = _skipped(caplog)
    # the filter really skipped steps (most of them), yet judged some by a power flow
    assert skipped > judged > 0, (judged, skipped)
    kinds = {n.generation_limit.kind for n in fast.nodes if n.generation_limit} | {
        n.load_limit.kind for n in fast.nodes if n.load_limit
    }
    assert kinds  # limits bind (the comparison is not about nodes capped at the search's maximum)


def test_filtered_answer_holds_at_every_step_by_independent_power_flows(lv: Grid) -> None:
    """Brute force (one Newton-Raphson power flow per step) on the filtered answer of one node."""
    steps = 192
    limits = ViolationLimits(u_min_pu=0.95, u_max_pu=1.04, loading_max=0.6)
    name = str(lv.names_of("node")[7])
    (record,) = hosting_capacity(lv, nodes=[name], steps=steps, limits=limits, margin_filter=MARGIN_FILTER).nodes
    for sign, got, limit in (
        (-1.0, record.generation_mw, record.generation_limit),
        (1.0, record.load_mw, record.load_limit),
    ):
        assert got > 0
        assert _feasible_brute(lv, record.node_id, sign * got * 1e6, steps, limits)
        assert limit is not None
        above = got + max(ACCURACY_FRACTION * got, ACCURACY_MW)
        seen = _violations_at(lv, _model_with_extra(lv, record.node_id, sign * above * 1e6), limit.step, limits)
        assert (limit.kind, limit.element) in seen


def test_filter_on_dask_gives_the_same_answers(lv: Grid) -> None:
    names = [str(n) for n in lv.names_of("node")[2:6]]
    local = hosting_capacity(lv, nodes=names, steps=96, margin_filter=MARGIN_FILTER)
    remote = run_hosting_capacity(
        lv, nodes=names, steps=96, workers=2, processes=False, chunk_nodes=2, margin_filter=MARGIN_FILTER
    )
    assert remote.to_dict() == local.to_dict()


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_filter_allowance_is_refused(lv: Grid, bad: float) -> None:
    name = str(lv.names_of("node")[3])
    with pytest.raises(InputError, match="margin filter"):
        hosting_capacity(lv, nodes=[name], steps=4, margin_filter=bad)
    with pytest.raises(InputError, match="margin filter"):
        run_hosting_capacity(lv, nodes=[name], steps=4, workers=1, processes=False, margin_filter=bad)


def test_base_case_kept_between_chunks_follows_a_grid_changed_in_place(lv: Grid) -> None:
    """The base case kept in the process is not reused for a grid whose arrays changed since."""
    from dataclasses import replace

    grid = replace(lv, input={c: a.copy() for c, a in lv.input.items()})
    name = str(grid.names_of("node")[9])
    before = hosting_capacity(grid, nodes=[name], steps=8, margin_filter=MARGIN_FILTER)
    grid.input["transformer"]["sn"] *= 0.5  # the same object, changed in place
    after = hosting_capacity(grid, nodes=[name], steps=8, margin_filter=MARGIN_FILTER)
    fresh = hosting_capacity(replace(grid, input=dict(grid.input)), nodes=[name], steps=8)
    assert after.to_dict() == fresh.to_dict()
    assert after.nodes[0].generation_mw < before.nodes[0].generation_mw


def test_verify_every_step_finds_a_size_that_breaks_a_step(lv: Grid) -> None:
    from dataclasses import replace

    from opendso.calc.hosting_capacity import verify_every_step

    names = [str(n) for n in lv.names_of("node")[[3, 8]]]
    result = hosting_capacity(lv, nodes=names, steps=48, margin_filter=MARGIN_FILTER)
    assert verify_every_step(lv, result) == [(True, True), (True, True)]
    first = result.nodes[0]
    # 5 % above the generation found breaks a step (the search is accurate to 1 % or 10 kW)
    bigger = replace(first, generation_mw=first.generation_mw * 1.05 + 0.01)
    assert verify_every_step(lv, replace(result, nodes=(bigger, result.nodes[1]))) == [(False, True), (True, True)]

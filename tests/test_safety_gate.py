"""The safety gate's interlock matrix on SimBench 1-MV-urban--0-sw.

For every rule of issue 10 (item 1), in the gate's order: one unsafe request refused by exactly
that rule, with a reason that names the switch, tag, document, node or state concerned, and the
safe counterpart allowed. The cases are built from the grid's own switches: feeder breakers (CB),
load-break switches on the feeders (LBS), the open ties between feeders (loop_line_switch) and
the disconnectors of the base station (DS). Limits the tests need are derived from power flows
of the grid, not typed in.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from opendso.calc.powerflow import run_power_flow
from opendso.errors import ConflictError, UnknownSwitchError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.switching import (
    Confirmation,
    DocumentKind,
    DocumentState,
    Earth,
    GateConfig,
    GateDecision,
    GateRule,
    Override,
    SafetyDocument,
    SafetyGate,
    SwitchAction,
    SwitchingRequest,
    SwitchingState,
    Tag,
    TagKind,
)
from opendso.quality import Quality

SOURCE = "simbench:1-MV-urban--0-sw"
LBS = "MV3.101 Switch 13"  # a load-break switch inside the feeder of Line 1
FEEDER_CB = "MV3.101 Switch 12"  # the circuit breaker at the head of the feeder of Line 1
TIE = "MV3.101 loop_line_switch 1.2"  # open tie between the feeders of Line 1 and Line 16
TIE_FEEDERS = frozenset({"MV3.101 node1 / MV3.101 Line 1", "MV3.101 node1 / MV3.101 Line 16"})
DS = "CB MV3.101 Base Station1"  # an open disconnector between two base-station busbars
DS_FEED = "MV3.101 BS-Feeder4_line CB to Base Station"  # the breaker feeding the DS's other busbar
NO_STATE = SwitchingState()
OPEN, CLOSE = SwitchAction.OPEN, SwitchAction.CLOSE


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    g = grid_of(SOURCE)
    kinds = dict(zip(g.switch_names.tolist(), g.switch_kinds.tolist(), strict=True))
    assert (kinds[LBS], kinds[FEEDER_CB], kinds[TIE], kinds[DS]) == ("LBS", "CB", "LBS", "DS")
    return g


def opened(grid: Grid, *names: str) -> Grid:
    closed = grid.switches["closed"].copy()
    for name in names:
        closed[np.flatnonzero(grid.switch_names == name)[0]] = 0
    return grid.with_switch_states(closed)


def newly_dead_node(grid: Grid, switch: str) -> str:
    """A node that opening ``switch`` de-energises."""
    before = analyse_topology(grid).node_energised
    after = analyse_topology(opened(grid, switch)).node_energised
    dead = np.flatnonzero(before & ~after)
    assert dead.size
    return str(grid.names_of("node")[dead[-1]])


def check(
    grid: Grid,
    switch: str,
    action: SwitchAction,
    *,
    state: SwitchingState = NO_STATE,
    config: GateConfig | None = None,
    **request: object,
) -> GateDecision:
    gate = SafetyGate(config) if config is not None else SafetyGate()
    return gate.check(grid, SwitchingRequest(switch, action, "alice", **request), state=state)  # type: ignore[arg-type]


def refused_by(decision: GateDecision, rule: GateRule, *names: str) -> None:
    assert not decision.allowed, decision
    assert decision.rule is rule, decision
    for name in names:
        assert name in decision.reason, (name, decision.reason)
    # every rule before the refusing one was checked and passed
    assert decision.passed == tuple(GateRule)[: tuple(GateRule).index(rule)]


def allowed(decision: GateDecision) -> None:
    assert decision.allowed, decision
    assert decision.rule is None
    assert decision.passed == tuple(GateRule)


# -- the rules and their order -------------------------------------------------------------------


def test_the_rules_are_checked_in_the_issues_order() -> None:
    assert [r.value for r in GateRule] == [
        "tags",
        "safety_documents",
        "earthing",
        "device_capability",
        "trustworthy_state",
        "faulted_section",
        "paralleling",
        "limits",
        "two_person_approval",
    ]


def test_the_first_refusal_stops_the_check(grid: Grid) -> None:
    # a do-not-operate tag and an untrustworthy state: the tag, checked first, refuses
    state = SwitchingState(tags=(Tag("T1", LBS, TagKind.DO_NOT_OPERATE),), qualities={LBS: Quality.STALE})
    refused_by(check(grid, LBS, OPEN, state=state), GateRule.TAGS, LBS, "T1")


def test_bad_requests_raise(grid: Grid) -> None:
    with pytest.raises(UnknownSwitchError, match="no such switch") as info:
        check(grid, "no such switch", OPEN)
    assert info.value.exit_code == 2  # bad input: exit status 2 on the command line
    with pytest.raises(ConflictError, match=f"{TIE} is already open"):
        check(grid, TIE, OPEN)


# -- 1. tags -------------------------------------------------------------------------------------


def test_tags(grid: Grid) -> None:
    dno = SwitchingState(tags=(Tag("T-7", LBS, TagKind.DO_NOT_OPERATE, "crew on line"),))
    refused_by(check(grid, LBS, OPEN, state=dno), GateRule.TAGS, LBS, "T-7", "do-not-operate")
    # a do-not-operate tag cannot be overridden
    refused_by(check(grid, LBS, OPEN, state=dno, overrides=(Override("T-7", "urgent"),)), GateRule.TAGS, "T-7")
    caution = SwitchingState(tags=(Tag("C-3", LBS, TagKind.CAUTION, "SF6 low"),))
    decision = check(grid, LBS, OPEN, state=caution)
    refused_by(decision, GateRule.TAGS, LBS, "C-3", "caution")
    assert decision.confirm
    assert "C-3" in decision.confirm[0]
    # an override without a reason is no override
    refused_by(check(grid, LBS, OPEN, state=caution, overrides=(Override("C-3", " "),)), GateRule.TAGS, "C-3")
    override = Override("C-3", "gas pressure checked on site")
    decision = check(grid, LBS, OPEN, state=caution, overrides=(override,))
    allowed(decision)
    assert decision.overrides == (override,)  # carried for the audit
    # a tag on another switch does not concern this one
    allowed(check(grid, LBS, OPEN, state=SwitchingState(tags=(Tag("T-8", TIE, TagKind.DO_NOT_OPERATE),))))


# -- 2. safety documents -------------------------------------------------------------------------


@pytest.mark.parametrize("doc_state", [DocumentState.ISSUED, DocumentState.IN_WORK])
def test_an_open_document_holds_its_devices(grid: Grid, doc_state: DocumentState) -> None:
    doc = SafetyDocument("PTW-12", DocumentKind.PERMIT_TO_WORK, doc_state, devices=frozenset({LBS}))
    refused_by(check(grid, LBS, OPEN, state=SwitchingState(documents=(doc,))), GateRule.SAFETY_DOCUMENTS, LBS, "PTW-12")


@pytest.mark.parametrize("doc_state", [DocumentState.DRAFT, DocumentState.CLEARED, DocumentState.CANCELLED])
def test_a_document_not_open_holds_nothing(grid: Grid, doc_state: DocumentState) -> None:
    doc = SafetyDocument("PTW-12", DocumentKind.PERMIT_TO_WORK, doc_state, devices=frozenset({LBS}))
    allowed(check(grid, LBS, OPEN, state=SwitchingState(documents=(doc,))))


# -- 3. earthing ---------------------------------------------------------------------------------


def test_never_energise_an_earthed_node(grid: Grid) -> None:
    isolated = opened(grid, LBS)
    node = newly_dead_node(grid, LBS)
    earthed = SwitchingState(earths=(Earth(node, reference="PE-4"),))
    refused_by(check(isolated, LBS, CLOSE, state=earthed), GateRule.EARTHING, LBS, node, "PE-4")
    # the earths of an open document count as well
    doc = SafetyDocument("SFT-2", DocumentKind.SANCTION_FOR_TEST, DocumentState.IN_WORK, earths=frozenset({node}))
    refused_by(check(isolated, LBS, CLOSE, state=SwitchingState(documents=(doc,))), GateRule.EARTHING, node, "SFT-2")
    # earths removed (or the document cleared): allowed
    allowed(check(isolated, LBS, CLOSE))
    cleared = SafetyDocument("SFT-2", DocumentKind.SANCTION_FOR_TEST, DocumentState.CLEARED, earths=frozenset({node}))
    allowed(check(isolated, LBS, CLOSE, state=SwitchingState(documents=(cleared,))))
    # opening never energises: an earth beyond does not stop an open
    allowed(check(grid, LBS, OPEN, state=earthed))


# -- 4. device capability ------------------------------------------------------------------------


def test_a_disconnector_never_parallels_nor_makes_load_current(grid: Grid) -> None:
    # both busbars live: closing the disconnector parallels them
    refused_by(check(grid, DS, CLOSE), GateRule.DEVICE_CAPABILITY, DS, "disconnector")
    # its other busbar dead and without load: it makes no current, allowed
    dead_side = opened(grid, DS_FEED)
    allowed(check(dead_side, DS, CLOSE))


def test_a_disconnector_never_opens_a_loop_and_breaks_no_load(grid: Grid) -> None:
    closed = grid.switches["closed"].copy()
    closed[np.flatnonzero(grid.switch_names == DS)[0]] = 1
    looped = grid.with_switch_states(closed)
    refused_by(check(looped, DS, OPEN), GateRule.DEVICE_CAPABILITY, DS, "open a loop")
    # fed only through the disconnector, with nothing behind it: breaks no current, allowed
    radial = opened(looped, DS_FEED)
    allowed(check(radial, DS, OPEN))


def test_a_load_break_switch_never_closes_onto_a_fault(grid: Grid) -> None:
    isolated = opened(grid, LBS)
    node = newly_dead_node(grid, LBS)
    faulted = SwitchingState(faulted=frozenset({node}))
    refused_by(check(isolated, LBS, CLOSE, state=faulted), GateRule.DEVICE_CAPABILITY, LBS, "load-break", node)
    allowed(check(isolated, LBS, CLOSE))


# -- 5. trustworthy state ------------------------------------------------------------------------


def good_qualities(grid: Grid) -> dict[str, Quality]:
    return {str(name): Quality.GOOD for name in grid.switch_names}


@pytest.mark.parametrize(
    "flag", [Quality.INVALID, Quality.STALE, Quality.SUBSTITUTED, Quality.INCONSISTENT], ids=lambda q: q.name
)
def test_an_untrustworthy_own_state_refuses(grid: Grid, flag: Quality) -> None:
    qualities = good_qualities(grid) | {LBS: flag}
    decision = check(grid, LBS, OPEN, state=SwitchingState(qualities=qualities))
    refused_by(decision, GateRule.TRUSTWORTHY_STATE, f"switch {LBS}", str(flag.name))


def test_an_untrustworthy_feeder_state_refuses(grid: Grid) -> None:
    # the breaker at the head of the same feeder was entered by hand
    qualities = good_qualities(grid) | {FEEDER_CB: Quality.SUBSTITUTED | Quality.BLOCKED}
    decision = check(grid, LBS, OPEN, state=SwitchingState(qualities=qualities))
    refused_by(decision, GateRule.TRUSTWORTHY_STATE, f"switch {FEEDER_CB}", "SUBSTITUTED")
    # a measured node of the feeder that is stale
    node = newly_dead_node(grid, LBS)
    qualities = good_qualities(grid) | {node: Quality.STALE}
    refused_by(check(grid, LBS, OPEN, state=SwitchingState(qualities=qualities)), GateRule.TRUSTWORTHY_STATE, node)
    # a state that is not known at all
    qualities = good_qualities(grid)
    del qualities[FEEDER_CB]
    refused_by(check(grid, LBS, OPEN, state=SwitchingState(qualities=qualities)), GateRule.TRUSTWORTHY_STATE, FEEDER_CB)


def test_trustworthy_states_allow(grid: Grid) -> None:
    qualities = good_qualities(grid) | {"MV3.101 Switch 200": Quality.STALE}  # on another feeder
    allowed(check(grid, LBS, OPEN, state=SwitchingState(qualities=qualities)))


# -- 6. faulted section --------------------------------------------------------------------------


def test_never_close_onto_a_faulted_section(grid: Grid) -> None:
    # a circuit breaker could make the fault current: the faulted flag refuses it
    tripped = opened(grid, FEEDER_CB)
    node = newly_dead_node(grid, FEEDER_CB)
    faulted = SwitchingState(faulted=frozenset({node}))
    refused_by(check(tripped, FEEDER_CB, CLOSE, state=faulted), GateRule.FAULTED_SECTION, FEEDER_CB, node)
    allowed(check(tripped, FEEDER_CB, CLOSE))
    # a fault flagged on another feeder does not concern this close
    other = newly_dead_node(grid, "MV3.101 Switch 200")
    allowed(check(tripped, FEEDER_CB, CLOSE, state=SwitchingState(faulted=frozenset({other}))))


# -- 7. paralleling ------------------------------------------------------------------------------


def test_paralleling_two_feeders(grid: Grid) -> None:
    decision = check(grid, TIE, CLOSE)
    refused_by(decision, GateRule.PARALLELING, TIE, *TIE_FEEDERS)
    # configured as allowed to parallel, and the closed loop violates no limit
    allowed(check(grid, TIE, CLOSE, config=GateConfig(parallel_pairs=frozenset({TIE_FEEDERS}))))
    # configured, but the power flow of the closed loop violates a limit (here one the grid already
    # violates: paralleling accepts none, new or not)
    flow = run_power_flow(grid, output_component_types=["line"])
    loading = float(flow.output["line"]["loading"].max())
    tight = GateConfig(parallel_pairs=frozenset({TIE_FEEDERS}), loading_max=loading / 2)
    refused_by(check(grid, TIE, CLOSE, config=tight), GateRule.PARALLELING, TIE, "violates limits", "loaded")


def test_restoring_through_a_tie_is_no_paralleling(grid: Grid) -> None:
    allowed(check(opened(grid, FEEDER_CB), TIE, CLOSE))


# -- 8. limits -----------------------------------------------------------------------------------


def test_no_new_violation_without_confirmation(grid: Grid) -> None:
    # the feeder of Line 1 picked up through the tie from the feeder of Line 16 loads the latter more
    tripped = opened(grid, FEEDER_CB)
    pre = float(run_power_flow(tripped, output_component_types=["line"]).output["line"]["loading"].max())
    closed = tripped.switches["closed"].copy()
    closed[np.flatnonzero(grid.switch_names == TIE)[0]] = 1
    post = float(
        run_power_flow(tripped.with_switch_states(closed), output_component_types=["line"])
        .output["line"]["loading"]
        .max()
    )
    assert post > pre
    config = GateConfig(loading_max=(pre + post) / 2)
    decision = check(tripped, TIE, CLOSE, config=config)
    refused_by(decision, GateRule.LIMITS, TIE, "new violation", "loaded")
    assert decision.confirm  # what the operator would confirm
    confirmation = Confirmation(GateRule.LIMITS, "load transfer for 2 h only, agreed with planning")
    decision = check(tripped, TIE, CLOSE, config=config, confirmations=(confirmation,))
    allowed(decision)
    assert decision.confirmations == (confirmation,)
    # violations present before the switching are no new ones: opening a load-break switch with
    # lines already over a (tight) limit relieves them and creates none
    loading = run_power_flow(grid, output_component_types=["line"]).output["line"]["loading"]
    allowed(check(grid, LBS, OPEN, config=GateConfig(loading_max=float(loading.max()) / 2)))


def test_voltage_violations_count_as_well(grid: Grid) -> None:
    tripped = opened(grid, FEEDER_CB)
    closed = tripped.switches["closed"].copy()
    closed[np.flatnonzero(grid.switch_names == TIE)[0]] = 1
    pre = run_power_flow(tripped, output_component_types=["node"]).output["node"]
    post = run_power_flow(tripped.with_switch_states(closed), output_component_types=["node"]).output["node"]
    pre_min = float(pre["u_pu"][pre["energized"] == 1].min())
    post_min = float(post["u_pu"][post["energized"] == 1].min())
    assert post_min < pre_min
    config = GateConfig(u_min_pu=(pre_min + post_min) / 2)
    refused_by(check(tripped, TIE, CLOSE, config=config), GateRule.LIMITS, "p.u.")


# -- 9. two-person approval ----------------------------------------------------------------------


def test_critical_switches_need_a_second_person(grid: Grid) -> None:
    config = GateConfig(critical_switches=frozenset({LBS}))
    refused_by(check(grid, LBS, OPEN, config=config), GateRule.TWO_PERSON_APPROVAL, LBS, "approval")
    refused_by(check(grid, LBS, OPEN, config=config, approver="alice"), GateRule.TWO_PERSON_APPROVAL, "alice")
    allowed(check(grid, LBS, OPEN, config=config, approver="bob"))
    allowed(check(grid, LBS, OPEN))  # not critical: one person


def test_a_disconnector_never_makes_or_breaks_load_current(grid: Grid) -> None:
    # the base station's third busbar fed only through both disconnectors: its feeders' load
    # flows through them
    ds2 = "CB MV3.101 Base Station2"
    closed = grid.switches["closed"].copy()
    closed[np.isin(grid.switch_names, [DS, ds2])] = 1
    through_ds = opened(grid.with_switch_states(closed), DS_FEED, "MV3.101 BS-Feeder4_line CB at Base Station")
    refused_by(check(through_ds, DS, OPEN), GateRule.DEVICE_CAPABILITY, DS, "would break", " A")
    refused_by(check(opened(through_ds, DS), DS, CLOSE), GateRule.DEVICE_CAPABILITY, DS, "would make", " A")
    # the same operation with a load-break switch's capability passes that rule
    as_lbs = GateConfig(device_classes={"DS": GateConfig().device_classes["LBS"]})
    assert check(through_ds, DS, OPEN, config=as_lbs).rule is not GateRule.DEVICE_CAPABILITY

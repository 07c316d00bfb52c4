"""The safety gate: one pure check of one switching request against the grid and the field's state.

:meth:`SafetyGate.check` takes the grid as it is now (its switch states), a
:class:`~opendso.operations.switching.model.SwitchingRequest` and the
:class:`~opendso.operations.switching.model.SwitchingState`, and returns a
:class:`~opendso.operations.switching.model.GateDecision`. It runs the rules in the order of
issue 10 and stops at the first refusal, so the decision names exactly one rule:

1. tags: a do-not-operate tag on the switch refuses; a caution tag refuses unless the request
   overrides it with a reason (the decision carries the override for the audit);
2. safety documents: a switch listed by an open (issued, in work) document is not operated;
3. earthing: a close never energises (or connects to a live part) a node with an earth on it;
4. device capability, from the switch's kind in the model: a disconnector never makes or
   breaks more than a small current (by power flow of the state where it is closed) and never
   opens or closes a loop; a load-break switch never closes onto a section flagged faulted;
5. trustworthy state: the switch's own status and the states of the feeders it acts on (their
   switches and measured nodes) must not be invalid, intermediate, stale or manually entered;
6. faulted section: no close connects a section flagged faulted (whatever the device);
7. paralleling: a close between two live parts (two feeders, sources, or a loop) is refused
   unless the pair is configured as allowed, and then only if a power flow of the closed state
   violates no limit;
8. limits: the power flow of the post-switching state creates no new voltage or thermal
   violation, unless the operator confirms with a reason;
9. two-person approval for critical switches: an approver distinct from the actor.

Nothing here sends, stores or logs a command: later increments put the gate in front of
``TelemetryAdapter.command`` and record decisions in the event log and audit trail. A request for
an unknown switch raises :class:`~opendso.errors.UnknownSwitchError`; one for the state the
switch already has raises :class:`~opendso.errors.ConflictError` (nothing to decide).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from opendso.calc.powerflow import run_power_flow
from opendso.errors import ConflictError, UnknownSwitchError
from opendso.grid.model import BRANCH_COMPONENTS, SIDE_FROM, SIDE_LINK, Grid
from opendso.grid.topology import Topology, analyse_topology
from opendso.operations.switching.model import (
    UNTRUSTED_QUALITY,
    Confirmation,
    DeviceClass,
    GateConfig,
    GateDecision,
    GateRule,
    Override,
    SwitchAction,
    SwitchingRequest,
    SwitchingState,
    TagKind,
)
from opendso.quality import Quality

__all__ = ["SafetyGate"]

_THREE_WINDING = "three_winding_transformer"


@dataclass(frozen=True)
class _Flow:
    """Node voltages, branch loadings and the current through the switch of one power flow."""

    converged: bool
    error: str | None
    u_pu: npt.NDArray[np.float64]
    node_live: npt.NDArray[np.bool_]
    loading: dict[str, npt.NDArray[np.float64]]
    switch_current_a: float


@dataclass(frozen=True)
class _Violations:
    nodes: frozenset[int]
    branches: frozenset[tuple[str, int]]


class _Case:
    """One request on one grid: the pre and post states, computed lazily and once."""

    def __init__(self, grid: Grid, request: SwitchingRequest, state: SwitchingState, config: GateConfig) -> None:
        self.grid = grid
        self.request = request
        self.state = state
        self.config = config
        rows = np.flatnonzero(grid.switch_names == request.switch)
        if not rows.size:
            raise UnknownSwitchError(request.switch)
        self.row = int(rows[0])
        closed_now = bool(grid.switches["closed"][self.row])
        self.closing = request.action is SwitchAction.CLOSE
        if closed_now == self.closing:
            raise ConflictError(f"switch {request.switch} is already {'closed' if closed_now else 'open'}")
        closed = grid.switches["closed"].copy()
        closed[self.row] = 1 if self.closing else 0
        self.post_grid = grid.with_switch_states(closed)
        self.kind = str(grid.switch_kinds[self.row]) if grid.switch_kinds.size == grid.switches.size else ""
        self.device = config.device_class(self.kind)
        self.node_names = grid.names_of("node")
        self.node_row, self.far_rows, self.element = self._place()

    # -- where the switch is ----------------------------------------------------------------------
    def _place(self) -> tuple[int, list[int], tuple[str, int, str]]:
        """Return the switch's node row, the node rows beyond it, and (component, row, end) of its element."""
        sw = self.grid.switches[self.row]
        node_row = int(self.grid.node_positions([sw["node"]])[0])
        for component in (*BRANCH_COMPONENTS, _THREE_WINDING):
            array = self.grid.component(component)
            hit = np.flatnonzero(array["id"] == sw["element"])
            if not hit.size:
                continue
            r = int(hit[0])
            if component == _THREE_WINDING:
                ends = [int(array[r][f"node_{k}"]) for k in (1, 2, 3)]
                k = ends.index(int(sw["node"])) + 1 if int(sw["node"]) in ends else 1
                far = [e for e in ends if e != int(sw["node"])]
                return node_row, [int(x) for x in self.grid.node_positions(far)], (component, r, str(k))
            from_node, to_node = int(array[r]["from_node"]), int(array[r]["to_node"])
            side = int(sw["side"])
            at_from = side == SIDE_FROM or (side == SIDE_LINK and int(sw["node"]) != to_node)
            far_node = to_node if at_from else from_node
            # beyond a switch on a branch end lies the branch's other node, if that end is connected
            other_end_closed = side == SIDE_LINK or bool(array[r]["to_status" if at_from else "from_status"])
            far_rows = [int(self.grid.node_positions([far_node])[0])] if other_end_closed else []
            return node_row, far_rows, (component, r, "from" if at_from else "to")
        return node_row, [], ("", -1, "")

    def node_name(self, row: int) -> str:
        return str(self.node_names[row])

    # -- topology and power flow, once each ---------------------------------------------------------
    @cached_property
    def pre_topology(self) -> Topology:
        return analyse_topology(self.grid)

    @cached_property
    def post_topology(self) -> Topology:
        return analyse_topology(self.post_grid)

    @cached_property
    def pre_flow(self) -> _Flow:
        return self._flow(self.grid)

    @cached_property
    def post_flow(self) -> _Flow:
        return self._flow(self.post_grid)

    def _flow(self, grid: Grid) -> _Flow:
        branches = [c for c in (*BRANCH_COMPONENTS, _THREE_WINDING) if grid.count(c)]
        result = run_power_flow(grid, output_component_types=["node", *branches])
        n = grid.count("node")
        if not result.converged:
            return _Flow(False, result.error, np.full(n, np.nan), np.zeros(n, dtype=bool), {}, float("nan"))
        out = result.output
        loading = {}
        for c in branches:
            res = out[c]
            if "loading" in (res.dtype.names or ()) and c != "link":
                loading[c] = np.where(res["energized"] == 1, res["loading"], 0.0).astype(np.float64)
        component, r, end = self.element
        current = 0.0
        if component:
            res = out[component][r]
            current = float(res[f"i_{end}"])
        return _Flow(
            True,
            None,
            out["node"]["u_pu"].astype(np.float64),
            out["node"]["energized"] == 1,
            loading,
            current,
        )

    def violations(self, flow: _Flow) -> _Violations:
        live = flow.node_live
        bad_u = live & ((flow.u_pu < self.config.u_min_pu) | (flow.u_pu > self.config.u_max_pu))
        branches = {(c, int(i)) for c, ld in flow.loading.items() for i in np.flatnonzero(ld > self.config.loading_max)}
        return _Violations(frozenset(int(i) for i in np.flatnonzero(bad_u)), frozenset(branches))

    def describe(self, v: _Violations, flow: _Flow) -> list[str]:
        limits = f"limits {self.config.u_min_pu}-{self.config.u_max_pu}"
        words = [f"node {self.node_name(i)} at {flow.u_pu[i]:.3f} p.u. ({limits})" for i in sorted(v.nodes)]
        for c, i in sorted(v.branches):
            name = str(self.grid.names_of(c)[i])
            words.append(f"{c} {name} loaded {flow.loading[c][i]:.0%} (limit {self.config.loading_max:.0%})")
        return words

    # -- sections -----------------------------------------------------------------------------------
    def sides(self) -> list[int]:
        return [self.node_row, *self.far_rows]

    def onto_section(self) -> npt.NDArray[np.bool_]:
        """Nodes a close connects onto: the dead parts it joins; when all joined parts are live, all of them.

        A close inside one connected part (a loop) connects onto nothing new.
        """
        topo = self.pre_topology
        comps = {int(topo.component[r]) for r in self.sides()}
        if len(comps) < 2:
            return np.zeros(topo.node_id.size, dtype=bool)
        dead = [c for c in comps if not topo.component_has_source[c]]
        return np.asarray(np.isin(topo.component, dead or list(comps)))

    def live_sides_before(self) -> list[int]:
        """Side node rows that are energised before a close, one per pre-state component."""
        topo = self.pre_topology
        seen: set[int] = set()
        out = []
        for row in self.sides():
            comp = int(topo.component[row])
            if topo.node_energised[row] and comp not in seen:
                seen.add(comp)
                out.append(row)
        return out

    def closes_loop(self) -> bool:
        """True when a close joins two live parts, or two points already joined (a loop)."""
        topo = self.pre_topology
        comps = {int(topo.component[r]) for r in self.sides()}
        return len(comps) < len(self.sides()) or len(self.live_sides_before()) > 1

    def opens_loop(self) -> bool:
        """True when an open leaves the two sides still joined (the switch was in a loop)."""
        topo = self.post_topology
        comps = {int(topo.component[r]) for r in self.sides()}
        return bool(self.far_rows) and len(comps) == 1

    def section_name(self, row: int) -> str:
        """The feeder name of a node, or the node's name where it is in no feeder (a busbar)."""
        topo = self.pre_topology
        feeder = int(topo.node_feeder[row])
        if feeder >= 0:
            return str(topo.feeders.name[np.flatnonzero(topo.feeders.id == feeder)[0]])
        return self.node_name(row)

    def feeders_acted_on(self) -> set[int]:
        ids: set[int] = set()
        for topo in (self.pre_topology, self.post_topology):
            ids.update(int(topo.node_feeder[r]) for r in self.sides())
        ids.discard(-1)
        return ids


@dataclass(frozen=True)
class SafetyGate:
    """The one gate every switching command passes; :meth:`check` is pure (no I/O, no state)."""

    config: GateConfig = field(default_factory=GateConfig)

    def check(self, grid: Grid, request: SwitchingRequest, *, state: SwitchingState) -> GateDecision:
        """Return the decision on ``request`` for ``grid`` in its present switch states and ``state``.

        Raises :class:`~opendso.errors.UnknownSwitchError` for a switch the grid lacks and
        :class:`~opendso.errors.ConflictError` when the switch already has the requested state.
        """
        case = _Case(grid, request, state, self.config)
        rules: tuple[tuple[GateRule, Callable[[_Case], _Outcome]], ...] = (
            (GateRule.TAGS, _tags),
            (GateRule.SAFETY_DOCUMENTS, _documents),
            (GateRule.EARTHING, _earthing),
            (GateRule.DEVICE_CAPABILITY, _capability),
            (GateRule.TRUSTWORTHY_STATE, _trustworthy),
            (GateRule.FAULTED_SECTION, _faulted),
            (GateRule.PARALLELING, _paralleling),
            (GateRule.LIMITS, _limits),
            (GateRule.TWO_PERSON_APPROVAL, _two_person),
        )
        passed: list[GateRule] = []
        overrides: list[Override] = []
        confirmations: list[Confirmation] = []
        for rule, run in rules:
            outcome = run(case)
            if outcome.refusal is not None:
                return GateDecision(
                    switch=request.switch,
                    action=request.action,
                    allowed=False,
                    rule=rule,
                    reason=outcome.refusal,
                    confirm=outcome.confirm,
                    overrides=tuple(overrides),
                    confirmations=tuple(confirmations),
                    passed=tuple(passed),
                )
            overrides.extend(outcome.overrides)
            confirmations.extend(outcome.confirmations)
            passed.append(rule)
        return GateDecision(
            switch=request.switch,
            action=request.action,
            allowed=True,
            reason=f"{request.action.value} {request.switch}: every rule passed",
            overrides=tuple(overrides),
            confirmations=tuple(confirmations),
            passed=tuple(passed),
        )


@dataclass(frozen=True)
class _Outcome:
    refusal: str | None = None
    confirm: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()
    confirmations: tuple[Confirmation, ...] = ()


_PASS = _Outcome()


def _tags(case: _Case) -> _Outcome:
    name = case.request.switch
    tags = [t for t in case.state.tags if t.switch == name]
    for tag in tags:
        if tag.kind is TagKind.DO_NOT_OPERATE:
            return _Outcome(f"switch {name} carries do-not-operate tag {tag.id}: {tag.text}".rstrip(": "))
    used: list[Override] = []
    for tag in tags:
        override = case.request.override_of(tag.id)
        if override is None:
            return _Outcome(
                f"switch {name} carries caution tag {tag.id}: {tag.text}; an override with a reason is required",
                confirm=(f"override caution tag {tag.id} on switch {name}",),
            )
        used.append(override)
    return _Outcome(overrides=tuple(used))


def _documents(case: _Case) -> _Outcome:
    name = case.request.switch
    for doc in case.state.documents:
        if doc.state.is_open and name in doc.devices:
            return _Outcome(
                f"switch {name} is an isolation of {doc.kind.value} {doc.id}, which is {doc.state.value}; "
                "it is not operated while the document is open"
            )
    return _PASS


def _earthing(case: _Case) -> _Outcome:
    if not case.closing:
        return _PASS
    earthed = case.state.earthed_nodes()
    if not earthed:
        return _PASS
    onto = case.onto_section()
    live_after = case.post_topology.node_energised
    for row in np.flatnonzero(onto & live_after):
        node = case.node_name(int(row))
        if node in earthed:
            return _Outcome(
                f"closing switch {case.request.switch} would energise node {node}, which has an {earthed[node]}"
            )
    return _PASS


def _capability(case: _Case) -> _Outcome:
    name, kind = case.request.switch, case.kind or "of unknown kind"
    if case.device is DeviceClass.DISCONNECTOR:
        if case.closing and case.closes_loop():
            return _Outcome(f"disconnector {name} ({kind}) would close a loop or parallel two live parts")
        if not case.closing and case.opens_loop():
            return _Outcome(f"disconnector {name} ({kind}) would open a loop")
        flow = case.post_flow if case.closing else case.pre_flow
        if not flow.converged:
            return _Outcome(f"disconnector {name}: the current it would carry is unknown (power flow: {flow.error})")
        limit = case.config.disconnector_max_current_a
        if flow.switch_current_a > limit:
            verb = "make" if case.closing else "break"
            return _Outcome(
                f"disconnector {name} ({kind}) would {verb} {flow.switch_current_a:.1f} A, above its {limit:.1f} A"
            )
    if case.device is DeviceClass.LOAD_BREAK and case.closing:
        faulted = _faulted_nodes_connected(case)
        if faulted:
            return _Outcome(f"load-break switch {name} ({kind}) would close onto faulted node(s) {', '.join(faulted)}")
    return _PASS


def _trustworthy(case: _Case) -> _Outcome:
    qualities = case.state.qualities
    if qualities is None:
        return _PASS
    grid, name = case.grid, case.request.switch
    wanted: list[tuple[str, str]] = [("switch", name)]
    feeders = case.feeders_acted_on()
    if feeders:
        topo = case.pre_topology
        in_feeders = np.isin(topo.node_feeder, list(feeders))
        # a switch of the feeder: at one of its nodes, or on one of its branches (its head breaker)
        node_rows = grid.node_positions(grid.switches["node"])
        of_feeder = in_feeders[node_rows]
        for component, branch_feeder in topo.branch_feeder.items():
            ids = topo.element_id[component][np.isin(branch_feeder, list(feeders))]
            of_feeder |= np.isin(grid.switches["element"], ids)
        for row in np.flatnonzero(of_feeder):
            other = str(grid.switch_names[row])
            if other != name:
                wanted.append(("switch", other))
        # measured nodes of the feeders: only those the mapping has (not every node is measured)
        measured = (case.node_name(int(r)) for r in np.flatnonzero(in_feeders))
        wanted.extend(("node", node) for node in measured if node in qualities)
    for what, key in wanted:
        quality = qualities.get(key)
        if quality is None:
            return _Outcome(f"the state of {what} {key} is unknown (no quality given)")
        bad = Quality(quality) & UNTRUSTED_QUALITY
        if bad:
            flags = "|".join(q.name or "" for q in Quality if q.value and q in bad)  # canonical names only
            return _Outcome(f"the state of {what} {key} is not trustworthy ({flags})")
    return _PASS


def _faulted_nodes_connected(case: _Case) -> list[str]:
    if not case.state.faulted:
        return []
    onto = case.onto_section()
    return [case.node_name(int(r)) for r in np.flatnonzero(onto) if case.node_name(int(r)) in case.state.faulted]


def _faulted(case: _Case) -> _Outcome:
    if not case.closing:
        return _PASS
    faulted = _faulted_nodes_connected(case)
    if faulted:
        return _Outcome(
            f"closing switch {case.request.switch} would connect node(s) {', '.join(faulted)} flagged faulted; "
            "an authorised user must clear the flag first"
        )
    return _PASS


def _paralleling(case: _Case) -> _Outcome:
    if not case.closing or not case.closes_loop():
        return _PASS
    name = case.request.switch
    sections = sorted({case.section_name(r) for r in case.sides()})
    pair = frozenset(sections)
    if pair not in case.config.parallel_pairs:
        what = " and ".join(sections)
        return _Outcome(f"closing switch {name} would parallel {what}, a pair not configured as allowed to parallel")
    flow = case.post_flow
    if not flow.converged:
        return _Outcome(f"closing switch {name}: the power flow of the paralleled state fails ({flow.error})")
    words = case.describe(case.violations(flow), flow)
    if words:
        return _Outcome(f"closing switch {name} in parallel violates limits: {'; '.join(words[:5])}")
    return _PASS


def _limits(case: _Case) -> _Outcome:
    name = case.request.switch
    post = case.post_flow
    if not post.converged:
        return _Outcome(f"after switching {name} the power flow fails ({post.error})")
    pre = case.pre_flow
    before = case.violations(pre) if pre.converged else _Violations(frozenset(), frozenset())
    after = case.violations(post)
    new = _Violations(after.nodes - before.nodes, after.branches - before.branches)
    words = case.describe(new, post)
    if not words:
        return _PASS
    confirmation = case.request.confirmation_of(GateRule.LIMITS)
    if confirmation is not None:
        return _Outcome(confirmations=(confirmation,))
    return _Outcome(
        f"{case.request.action.value} {name} creates new violation(s): {'; '.join(words[:5])}"
        + (f" and {len(words) - 5} more" if len(words) > 5 else ""),
        confirm=tuple(words),
    )


def _two_person(case: _Case) -> _Outcome:
    name = case.request.switch
    if name not in case.config.critical_switches:
        return _PASS
    approver = (case.request.approver or "").strip()
    if not approver:
        return _Outcome(f"switch {name} is critical: a second person's approval is required")
    if approver == case.request.actor:
        return _Outcome(f"switch {name} is critical: the approver {approver} must not be the actor")
    return _PASS

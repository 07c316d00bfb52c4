"""Outage management: a record for every interruption, customer calls grouped into predicted outages.

An outage (:class:`~opendso.store.outages.OutageRecord`) comes from a protection trip, FLISR,
planned switching, customer calls or an imported history (:class:`OutageSource`). It names the
nodes and loads it interrupted and their customers (:mod:`opendso.grid.customers`), its start,
each restoration step, its end, its cause, the crew sent and the estimated restoration time, and
moves through the states of :class:`OutageState`::

    predicted ──► confirmed ──► restoring ──► restored
        │              │            │
        └──────────────┴────────────┴──► cancelled   (only while no customer was restored)

The functions here are pure: each takes a record and returns the changed one (nothing is
stored); :class:`OutageManager` reads, changes and saves records in the database under one lock.

Restoration steps are the rows the IEEE 1366 indices count (:mod:`opendso.operations.reliability`):
a step is the customers restored at its time, off since the outage began. When an outage knows
its loads individually, a step names the nodes restored and its customers are those of the
loads still off there; otherwise it gives a count. Closing restores everyone still off.

Customer calls (how outage management systems group them)
--------------------------------------------------------
The *supply tree* is the grid's under its present switch states (each node's predecessor towards
the source, :func:`~opendso.grid.topology.analyse_topology`). A switch sits on the tree edge of
the branch it acts on; the nodes below that edge are what opening it interrupts. *Protective
devices* are the switches of kinds ``CB``, ``fuse`` or ``recloser`` (any case) when the model has
any, else every switch. A call at a node:

1. joins an open outage (predicted, confirmed, restoring) that already interrupts that node;
2. else, when a predicted outage on the same feeder would, with this call, have at least
   ``threshold`` calls, extends that prediction to the deepest protective device upstream of all
   its calls' nodes and this one (their nearest common protective device); with several
   candidates, the one whose new device is deepest wins;
3. else opens a new predicted outage at the deepest protective device upstream of the node.

A predicted outage interrupts every energised node below its device and their loads.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from opendso.errors import ConflictError, InputError, NotFoundError, UnknownSwitchError
from opendso.grid.customers import customer_counts
from opendso.grid.model import Grid
from opendso.grid.topology import Topology, analyse_topology
from opendso.operations.reliability import OutageTable, ReliabilityReport, reliability_report
from opendso.store.outages import CallRecord, LoadRecord, OutageRecord, OutageStore, StepRecord
from opendso.text import check_text
from opendso.timeutil import from_epoch_us, to_epoch_us

__all__ = [
    "DEFAULT_CALL_THRESHOLD",
    "MAX_TEXT",
    "PROTECTIVE_KINDS",
    "OutageManager",
    "OutageSource",
    "OutageState",
    "SupplyTree",
    "add_restoration_step",
    "assign_crew",
    "cancel",
    "close",
    "confirm",
    "import_outage_table",
    "open_outage_from_trip",
    "records_table",
    "report_from_store",
    "set_etr",
]

log = logging.getLogger(__name__)

#: Calls a predicted outage needs before a call outside it extends it to a common device.
DEFAULT_CALL_THRESHOLD = 3
#: Switch kinds that are protective devices (compared without case).
PROTECTIVE_KINDS = frozenset({"cb", "fuse", "recloser"})
#: Longest free text (a call's words, a cause, a crew's name is shorter).
MAX_TEXT = 2000
_MAX_NAME = 200


class OutageState(enum.StrEnum):
    """Where an outage stands."""

    PREDICTED = "predicted"
    CONFIRMED = "confirmed"
    RESTORING = "restoring"
    RESTORED = "restored"
    CANCELLED = "cancelled"


class OutageSource(enum.StrEnum):
    """What an outage record came from."""

    TRIP = "trip"
    FLISR = "flisr"
    PLANNED = "planned"
    CALL = "call"
    IMPORT = "import"


_OPEN = (OutageState.PREDICTED, OutageState.CONFIRMED, OutageState.RESTORING)


# -- the supply tree -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SupplyTree:
    """The grid's supply tree with the switch on each tree edge, built once per grid and switch states.

    Arrays follow the grid's node rows: ``parent`` (-1 at a source or a dead node), ``depth``,
    ``edge_switch`` (the row of a protective switch on the edge from the parent, -1 when none),
    ``tin``/``tout`` (a depth-first numbering: ``m`` is below ``n`` when ``tin[n] <= tin[m] < tout[n]``).
    """

    grid: Grid
    topology: Topology
    parent: npt.NDArray[np.int64]
    depth: npt.NDArray[np.int64]
    edge_switch: npt.NDArray[np.int64]
    tin: npt.NDArray[np.int64]
    tout: npt.NDArray[np.int64]
    node_names: npt.NDArray[np.object_]
    counts: npt.NDArray[np.int64]

    @classmethod
    def build(cls, grid: Grid, counts: npt.ArrayLike | None = None) -> SupplyTree:
        """Return the supply tree of ``grid`` under its present switch states.

        ``counts`` are the customers of each ``sym_load`` row (default:
        :func:`~opendso.grid.customers.customer_counts` of the grid).
        """
        topology = analyse_topology(grid)
        n = int(topology.node_id.size)
        parent = topology.pred_node.copy()
        energised = topology.node_energised
        parent[~energised] = -1
        # depth and a depth-first numbering, with an explicit stack (no recursion on long feeders)
        children: list[list[int]] = [[] for _ in range(n)]
        for child in np.flatnonzero(parent >= 0).tolist():
            children[int(parent[child])].append(child)
        depth = np.zeros(n, dtype=np.int64)
        tin = np.zeros(n, dtype=np.int64)
        tout = np.zeros(n, dtype=np.int64)
        clock = 0
        for root in np.flatnonzero(parent < 0).tolist():
            stack: list[tuple[int, bool]] = [(root, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    tout[node] = clock
                    continue
                tin[node] = clock
                clock += 1
                stack.append((node, True))
                for child in children[node]:
                    depth[child] = depth[node] + 1
                    stack.append((child, False))
        edge_switch = np.full(n, -1, dtype=np.int64)
        switches = grid.switches
        if switches.size:
            kinds = [str(k).lower() for k in grid.switch_kinds] if grid.switch_kinds.size == switches.size else []
            protective = np.array([k in PROTECTIVE_KINDS for k in kinds], dtype=bool) if kinds else None
            if protective is None or not protective.any():
                protective = np.ones(switches.size, dtype=bool)
            by_element: dict[int, list[int]] = {}
            for row in np.flatnonzero(protective & (switches["closed"] == 1)):
                by_element.setdefault(int(switches["element"][row]), []).append(int(row))
            for below in np.flatnonzero(parent >= 0).tolist():
                rows = by_element.get(int(topology.pred_branch[below]))
                if rows:
                    edge_switch[below] = rows[0]
        values = customer_counts(grid) if counts is None else np.asarray(counts, dtype=np.int64)
        return cls(
            grid=grid,
            topology=topology,
            parent=parent,
            depth=depth,
            edge_switch=edge_switch,
            tin=tin,
            tout=tout,
            node_names=grid.names_of("node"),
            counts=values,
        )

    def node_row(self, name: str) -> int:
        """Return the row of the node named ``name``; :class:`NotFoundError` when the grid has none."""
        hits = np.flatnonzero(self.node_names == name)
        if not hits.size:
            raise NotFoundError(f"no node {name!r} in grid {self.grid.name!r}")
        return int(hits[0])

    def load_row(self, name: str) -> int:
        """Return the ``sym_load`` row named ``name``; :class:`NotFoundError` when the grid has none."""
        hits = np.flatnonzero(self.grid.names_of("sym_load") == name)
        if not hits.size:
            raise NotFoundError(f"no load {name!r} in grid {self.grid.name!r}")
        return int(hits[0])

    def below(self, row: int) -> npt.NDArray[np.int64]:
        """Return the node rows at or below ``row`` on the tree."""
        inside = (self.tin >= self.tin[row]) & (self.tin < self.tout[row])
        if self.parent[row] < 0:  # a root: its tree only, not other islands numbered after it
            inside &= self.topology.component == self.topology.component[row]
        return np.flatnonzero(inside).astype(np.int64)

    def common_ancestor(self, rows: Iterable[int]) -> int:
        """Return the deepest node at or above every row of ``rows`` (-1 when they share none)."""
        listed = [int(r) for r in rows]
        anc = listed[0]
        for row in listed[1:]:
            a, b = anc, row
            while a != b:
                if a < 0 or b < 0:
                    return -1
                if self.depth[a] >= self.depth[b]:
                    a = int(self.parent[a]) if self.parent[a] >= 0 else -1
                else:
                    b = int(self.parent[b]) if self.parent[b] >= 0 else -1
            anc = a
        return anc

    def device_above(self, row: int) -> tuple[int, int]:
        """Return (switch row, node row below it) of the deepest protective device at or above ``row``'s edge.

        ``(-1, root)`` when no protective switch lies between the node and its source.
        """
        node = row
        while node >= 0:
            if self.edge_switch[node] >= 0:
                return int(self.edge_switch[node]), node
            if self.parent[node] < 0:
                return -1, node
            node = int(self.parent[node])
        return -1, row

    def feeder_of(self, row: int) -> str | None:
        """Return the name of the feeder of node ``row`` (None for busbars and dead sections)."""
        feeder_id = int(self.topology.node_feeder[row])
        if feeder_id < 0:
            return None
        hit = np.flatnonzero(self.topology.feeders.id == feeder_id)
        return str(self.topology.feeders.name[hit[0]]) if hit.size else None

    def loads_at(self, node_rows: npt.NDArray[np.int64]) -> list[LoadRecord]:
        """Return the loads at ``node_rows`` that have customers, as interrupted-load records.

        The parts of one source load (constant power, current and impedance rows) are one load:
        its name is its first part's, its power (base case ``|p_specified|``) the parts' sum.
        """
        loads = self.grid.component("sym_load")
        if not loads.size or not node_rows.size:
            return []
        at = self.grid.node_positions(loads["node"])
        names = self.grid.names_of("sym_load")
        table = self.grid.column("sym_load", "source_table")
        index = self.grid.column("sym_load", "source_index")
        power = np.nan_to_num(np.abs(loads["p_specified"].astype(np.float64)), nan=0.0)
        merged: dict[object, LoadRecord] = {}
        for r in np.flatnonzero(np.isin(at, node_rows)).tolist():
            key: object = (str(table[r]), str(index[r])) if table[r] is not None and index[r] is not None else r
            known = merged.get(key)
            if known is None:
                merged[key] = LoadRecord(
                    load=str(names[r]),
                    node=str(self.node_names[at[r]]),
                    customers=int(self.counts[r]),
                    p_w=float(power[r]),
                )
            else:
                merged[key] = replace(
                    known, customers=known.customers + int(self.counts[r]), p_w=(known.p_w or 0.0) + float(power[r])
                )
        return sorted((ld for ld in merged.values() if ld.customers > 0), key=lambda ld: ld.load)


# -- checks ----------------------------------------------------------------------------------------------------
def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what}: {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def _require_open(record: OutageRecord, action: str) -> None:
    if record.state not in _OPEN:
        raise ConflictError(f"outage {record.id} is {record.state}: cannot {action}")


def _not_before(record: OutageRecord, when: datetime, what: str) -> None:
    if when < record.start:
        raise InputError(f"{what} {when.isoformat()} is before the outage's start {record.start.isoformat()}")
    if record.steps and when < record.steps[-1].end:
        raise InputError(
            f"{what} {when.isoformat()} is before the last restoration step {record.steps[-1].end.isoformat()}"
        )


# -- the record's life -----------------------------------------------------------------------------------------
def open_outage_from_trip(
    grid: Grid,
    switch: str,
    time: datetime,
    *,
    counts: npt.ArrayLike | None = None,
    cause: str | None = None,
    actor: str = "system",
    source: OutageSource = OutageSource.TRIP,
) -> OutageRecord:
    """Return a confirmed outage for the opening of ``switch`` at ``time`` (nothing stored).

    ``grid`` holds the switch states before the trip. The outage interrupts the nodes energised
    before and not after the switch opens (:func:`~opendso.grid.topology.analyse_topology` on
    both states) and the loads at those nodes with their customers (``counts`` per ``sym_load``
    row, default :func:`~opendso.grid.customers.customer_counts`). Raises
    :class:`UnknownSwitchError` for a switch the grid does not have.
    """
    when = _aware(time, "trip time")
    rows = np.flatnonzero(grid.switch_names == switch)
    if not rows.size:
        raise UnknownSwitchError(f"no switch {switch!r} in grid {grid.name!r}")
    closed = grid.switches["closed"].copy()
    closed[rows[0]] = 1
    before = grid.with_switch_states(closed)
    closed[rows[0]] = 0
    after = analyse_topology(grid.with_switch_states(closed))
    tree = SupplyTree.build(before, counts)
    dead = np.flatnonzero(tree.topology.node_energised & ~after.node_energised).astype(np.int64)
    loads = tree.loads_at(dead)
    feeders = {tree.feeder_of(int(r)) for r in dead} - {None}
    return OutageRecord(
        source=str(source),
        state=str(OutageState.CONFIRMED),
        start=when,
        customers=sum(ld.customers for ld in loads),
        created_by=actor,
        device=switch,
        feeder=sorted(str(f) for f in feeders)[0] if feeders else None,
        cause=None if cause is None else check_text("cause", cause, max_len=MAX_TEXT),
        loads_known=True,
        nodes=tuple(str(tree.node_names[r]) for r in dead),
        loads=tuple(loads),
    )


def confirm(record: OutageRecord) -> OutageRecord:
    """Return a predicted outage confirmed (a crew or the telemetry saw it); 409 in any other state."""
    if record.state != OutageState.PREDICTED:
        raise ConflictError(f"outage {record.id} is {record.state}: only a predicted outage is confirmed")
    return replace(record, state=str(OutageState.CONFIRMED))


def add_restoration_step(
    record: OutageRecord,
    time: datetime,
    *,
    nodes: Sequence[str] = (),
    customers: int | None = None,
    actor: str,
) -> OutageRecord:
    """Return the outage with one more restoration step at ``time``.

    An outage that knows its loads takes the ``nodes`` restored (each one it interrupted); the
    step's customers are those of its loads still off there. Otherwise it takes ``customers``,
    at most those still off. When nobody is left off, the outage is restored and ends at ``time``.
    A time before the start or the previous step is :class:`InputError`; an outage restored or
    cancelled is :class:`ConflictError`.
    """
    _require_open(record, "add a restoration step")
    when = _aware(time, "restoration time")
    _not_before(record, when, "restoration time")
    restored_nodes = tuple(dict.fromkeys(str(n) for n in nodes))
    loads = record.loads
    if record.loads_known:
        if not restored_nodes:
            raise InputError("this outage knows its customers individually: name the nodes restored")
        unknown = sorted(set(restored_nodes) - set(record.nodes))
        if unknown:
            raise InputError(f"node(s) not interrupted by outage {record.id}: {', '.join(unknown[:10])}")
        wanted = set(restored_nodes)
        back = [ld for ld in loads if ld.restored is None and ld.node in wanted]
        count = sum(ld.customers for ld in back)
        if customers is not None and customers != count:
            raise InputError(f"the nodes named bring back {count} customers, not {customers}")
        names = {ld.load for ld in back}
        loads = tuple(replace(ld, restored=when) if ld.load in names else ld for ld in loads)
    else:
        if customers is None:
            raise InputError("give the customers restored")
        count = int(customers)
        if count < 0 or count > record.customers_off:
            raise InputError(f"customers restored {count} must be between 0 and the {record.customers_off} still off")
    step = StepRecord(
        seq=len(record.steps) + 1,
        start=record.start,
        end=when,
        customers=count,
        actor=actor,
        feeder=record.feeder,
        nodes=restored_nodes,
    )
    changed = replace(record, steps=(*record.steps, step), loads=loads, state=str(OutageState.RESTORING))
    if changed.customers_off == 0:
        changed = replace(changed, state=str(OutageState.RESTORED), end=when)
    return changed


def close(record: OutageRecord, time: datetime, *, actor: str, cause: str | None = None) -> OutageRecord:
    """Return the outage restored at ``time``: everyone still off is restored in a last step.

    ``cause`` (free text) replaces the recorded cause when given. An end before the start or the
    last step is :class:`InputError`.
    """
    _require_open(record, "close it")
    when = _aware(time, "end")
    _not_before(record, when, "end")
    changed = record
    if cause is not None:
        changed = replace(changed, cause=check_text("cause", cause, max_len=MAX_TEXT))
    if changed.customers_off > 0 or not changed.steps:
        step = StepRecord(
            seq=len(changed.steps) + 1,
            start=changed.start,
            end=when,
            customers=changed.customers_off,
            actor=actor,
            feeder=changed.feeder,
            nodes=tuple(n for n in changed.nodes if n not in {m for s in changed.steps for m in s.nodes}),
        )
        loads = tuple(ld if ld.restored is not None else replace(ld, restored=when) for ld in changed.loads)
        changed = replace(changed, steps=(*changed.steps, step), loads=loads)
    return replace(changed, state=str(OutageState.RESTORED), end=when)


def cancel(record: OutageRecord, time: datetime) -> OutageRecord:
    """Return the outage cancelled (a prediction found false): not counted by the indices.

    :class:`ConflictError` once a customer was restored (then it happened: close it instead).
    """
    _require_open(record, "cancel it")
    if record.steps:
        raise ConflictError(f"outage {record.id} has restoration steps: close it instead of cancelling it")
    return replace(record, state=str(OutageState.CANCELLED), end=_aware(time, "time"))


def assign_crew(record: OutageRecord, crew: str, time: datetime) -> OutageRecord:
    """Return the outage with ``crew`` (free text, one line) assigned at ``time``."""
    _require_open(record, "assign a crew")
    name = check_text("crew", crew, max_len=_MAX_NAME)
    if "\n" in name or "\r" in name:
        raise InputError("crew: one line only")
    return replace(record, crew=name, crew_assigned=_aware(time, "crew time"))


def set_etr(record: OutageRecord, etr: datetime) -> OutageRecord:
    """Return the outage with its estimated restoration time; before the start is :class:`InputError`."""
    _require_open(record, "set its estimated restoration time")
    when = _aware(etr, "etr")
    if when < record.start:
        raise InputError(f"etr {when.isoformat()} is before the outage's start {record.start.isoformat()}")
    return replace(record, etr=when)


# -- calls -----------------------------------------------------------------------------------------------------
def _predicted(tree: SupplyTree, device_row: int, below_row: int, start: datetime, actor: str) -> OutageRecord:
    rows = tree.below(below_row)
    rows = rows[tree.topology.node_energised[rows]]
    loads = tree.loads_at(rows)
    return OutageRecord(
        source=str(OutageSource.CALL),
        state=str(OutageState.PREDICTED),
        start=start,
        customers=sum(ld.customers for ld in loads),
        created_by=actor,
        device=str(tree.grid.switch_names[device_row]) if device_row >= 0 else None,
        feeder=tree.feeder_of(below_row),
        loads_known=True,
        nodes=tuple(str(tree.node_names[r]) for r in rows),
        loads=tuple(loads),
    )


def _group_call(
    tree: SupplyTree,
    open_outages: Sequence[OutageRecord],
    call_nodes: Mapping[int, Sequence[str]],
    node_row: int,
    when: datetime,
    actor: str,
    threshold: int,
) -> OutageRecord:
    """Return the outage a call at ``node_row`` joins (changed when the prediction grows), not yet stored."""
    name = str(tree.node_names[node_row])
    for record in open_outages:
        if name in record.nodes:
            return record
    if not tree.topology.node_energised[node_row]:
        raise ConflictError(f"node {name} has no supply in the model and no open outage names it")
    feeder = tree.feeder_of(node_row)
    best: tuple[int, OutageRecord, int, int] | None = None
    for record in open_outages:
        if record.state != OutageState.PREDICTED or record.id is None or record.feeder != feeder:
            continue
        nodes = [n for n in call_nodes.get(record.id, ()) if (tree.node_names == n).any()]
        if len(nodes) + 1 < threshold:
            continue
        rows = [tree.node_row(n) for n in nodes] + [node_row]
        ancestor = tree.common_ancestor(rows)
        if ancestor < 0:
            continue
        device, below = tree.device_above(ancestor)
        depth = int(tree.depth[below])
        if best is None or depth > best[0]:
            best = (depth, record, device, below)
    if best is not None:
        _, record, device, below = best
        grown = _predicted(tree, device, below, min(record.start, when), record.created_by)
        return replace(
            grown,
            id=record.id,
            cause=record.cause,
            crew=record.crew,
            crew_assigned=record.crew_assigned,
            etr=record.etr,
        )
    device, below = tree.device_above(node_row)
    return _predicted(tree, device, below, when, actor)


# -- the manager -----------------------------------------------------------------------------------------------
class OutageManager:
    """Outage records of one grid in one database: opened, grown by calls, restored, closed.

    ``grid`` holds the present switch states (a callable is asked each time, e.g. the control
    room's grid of the moment); ``counts`` the customers per ``sym_load`` row (default
    :func:`~opendso.grid.customers.customer_counts`); ``threshold`` the calls a prediction needs
    before it extends to a common device. Every change is saved whole, under the store's lock.
    """

    def __init__(
        self,
        store: OutageStore,
        grid: Grid,
        *,
        counts: npt.ArrayLike | None = None,
        threshold: int = DEFAULT_CALL_THRESHOLD,
    ) -> None:
        if threshold < 1:
            raise InputError(f"call threshold {threshold} must be at least 1")
        self.store = store
        self.threshold = threshold
        self._counts = customer_counts(grid) if counts is None else np.asarray(counts, dtype=np.int64)
        self._tree: SupplyTree | None = None
        self._grid = grid

    @property
    def customers_served(self) -> int:
        """Every customer of the grid (N_T of the indices)."""
        return int(self._counts.sum())

    def tree(self, grid: Grid | None = None) -> SupplyTree:
        """Return the supply tree of ``grid`` (default: the manager's), rebuilt when the switch states changed."""
        grid = grid or self._grid
        cached = self._tree
        if cached is None or (
            cached.grid is not grid and not np.array_equal(cached.grid.switches["closed"], grid.switches["closed"])
        ):
            cached = SupplyTree.build(grid, self._counts)
            self._tree = cached
        return cached

    def open_from_trip(self, switch: str, time: datetime, *, actor: str, cause: str | None = None) -> OutageRecord:
        """Record the outage a trip of ``switch`` causes (the manager's grid holds the states before it)."""
        record = open_outage_from_trip(self._grid, switch, time, counts=self._counts, cause=cause, actor=actor)
        return self.store.save(record, now=datetime.now(UTC))

    def log_call(
        self,
        *,
        time: datetime,
        text: str,
        actor: str,
        load: str | None = None,
        node: str | None = None,
        grid: Grid | None = None,
    ) -> tuple[CallRecord, OutageRecord]:
        """Log a customer call at a load or node and group it (see the module docstring); return both saved."""
        body = check_text("call text", text, max_len=MAX_TEXT)
        when = _aware(time, "call time")
        tree = self.tree(grid)
        if (load is None) == (node is None):
            raise InputError("name either the load or the node of the call")
        if load is not None:
            row = tree.load_row(load)
            node_row = int(tree.grid.node_positions(tree.grid.component("sym_load")["node"][row : row + 1])[0])
        else:
            assert node is not None
            node_row = tree.node_row(node)
        call = CallRecord(ts=when, node=str(tree.node_names[node_row]), text=body, actor=actor, load=load)
        with self.store.locked:
            open_outages = self.store.open_outages()
            call_nodes = self._call_nodes(open_outages)
            record = _group_call(tree, open_outages, call_nodes, node_row, when, actor, self.threshold)
            saved, stored_call = self.store.save_with_call(record, call, now=datetime.now(UTC))
        log.info("event=outage_call outage=%s node=%s device=%s", saved.id, call.node, saved.device)
        return stored_call, saved

    def _call_nodes(self, records: Sequence[OutageRecord]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for record in records:
            if record.id is not None and record.state == OutageState.PREDICTED:
                out[record.id] = [c.node for c in self.store.calls(record.id)]
        return out

    def change(self, outage_id: int, action: Any) -> OutageRecord:
        """Apply ``action`` (record -> record) to outage ``outage_id`` and save it; return the saved record."""
        with self.store.locked:
            record = self.store.get(outage_id)
            return self.store.save(action(record), now=datetime.now(UTC))


# -- history and indices ---------------------------------------------------------------------------------------
def import_outage_table(table: OutageTable, *, actor: str) -> list[OutageRecord]:
    """Return one restored outage per event of an outage CSV (each row one restoration step).

    The outage starts at the earliest start of its rows and ends at the latest end; its
    customers are the rows' sum; feeder and cause are its first row's (each step keeps its row's
    feeder). The loads are not known individually.
    """
    order: dict[str, list[int]] = {}
    for k, event in enumerate(table.event.tolist()):
        order.setdefault(str(event), []).append(k)
    records = []
    for event, rows in order.items():
        steps = tuple(
            StepRecord(
                seq=i + 1,
                start=from_epoch_us(int(table.start_us[k])),
                end=from_epoch_us(int(table.end_us[k])),
                customers=int(table.customers[k]),
                actor=actor,
                feeder=str(table.feeder[k]) or None,
            )
            for i, k in enumerate(rows)
        )
        cause = next((str(table.cause[k]) for k in rows if str(table.cause[k])), None)
        records.append(
            OutageRecord(
                source=str(OutageSource.IMPORT),
                state=str(OutageState.RESTORED),
                external_id=event,
                start=min(s.start for s in steps),
                end=max(s.end for s in steps),
                customers=sum(s.customers for s in steps),
                created_by=actor,
                feeder=steps[0].feeder,
                cause=cause,
                steps=steps,
            )
        )
    return records


def records_table(store: OutageStore, *, feeders: Iterable[str] = ()) -> OutageTable:
    """Return the stored restoration steps as an outage table (the rows the indices count)."""
    rows = store.interruptions(feeders=feeders)
    return OutageTable(
        event=np.array(rows.event, dtype=object),
        start_us=np.array(rows.start_us, dtype=np.int64),
        end_us=np.array(rows.end_us, dtype=np.int64),
        customers=np.array(rows.customers, dtype=np.int64),
        feeder=np.array(rows.feeder, dtype=object),
        cause=np.array(rows.cause, dtype=object),
    )


def report_from_store(
    store: OutageStore,
    *,
    customers_served: int,
    start: datetime,
    end: datetime,
    tz: ZoneInfo | None = None,
    feeders: Iterable[str] = (),
) -> ReliabilityReport:
    """Return the IEEE 1366 report of the stored outages, with CAIFI and CTAIDI where the loads are known.

    The same report as :func:`~opendso.operations.reliability.reliability_report` on the outage
    CSV of the same history; ``feeders`` restricts it to an area (then ``customers_served`` is
    the area's). CAIFI and CTAIDI (IEEE 1366-2022, 4.3.5 and 4.3.4) need the distinct
    customers interrupted, and the energy not supplied (sum over the sustained load
    interruptions of the load's active power times the time it was off, MWh) the loads' power:
    both are given when every outage with a sustained step in the period knows its loads
    individually (and, for the energy, their power).
    """
    wanted = list(feeders)
    table = records_table(store, feeders=wanted)
    report = reliability_report(table, customers_served=customers_served, start=start, end=end, tz=tz)
    loads = store.sustained_loads(start_us=to_epoch_us(start), end_us=to_epoch_us(end), feeders=wanted)
    if loads is None:
        return report
    distinct: dict[str, int] = {}
    for ld in loads:
        distinct[ld.load] = max(distinct.get(ld.load, 0), ld.customers)
    ens = None
    if all(ld.p_w is not None for ld in loads):
        ens = sum(float(ld.p_w or 0.0) * ld.duration_us / 3.6e9 for ld in loads) / 1e6  # W * h -> MWh
    return replace(report, distinct_customers=sum(distinct.values()), ens_mwh=ens)

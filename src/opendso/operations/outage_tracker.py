"""Outages from the telemetry: a record for every interruption the cycle sees, a restoration step as supply returns.

:class:`OutageTracker` subscribes to the monitor's cycles. When a cycle's switch changes leave
nodes without supply that had it, it opens a confirmed outage for each switch that opened
(:func:`~opendso.operations.outages.open_outage_from_trip` on the grid before the change: the
nodes and loads that opening de-energised, with their customers): source ``trip`` when the
switch's own fault-passage indicator or protection pick-up saw fault current, ``planned`` for an
opening without it (switching by an operator or a plan). When a later change brings supply back to
nodes of an open outage, the tracker records a restoration step with those nodes at the cycle's
time: FLISR's isolation and restoration, a switching plan's steps, or the breaker reclosed. The
step times are the cycle's, so the IEEE 1366 indices of the stored records are the interruption
as the telemetry saw it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from opendso.errors import OpenDSOError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.cycle import CycleResult
from opendso.operations.outages import OutageSource, add_restoration_step, open_outage_from_trip
from opendso.store.outages import OutageRecord, OutageStore

__all__ = ["OutageTracker"]

log = logging.getLogger(__name__)


class OutageTracker:
    """Opens and restores outage records from the switch changes the cycles see (see the module docstring).

    ``grid`` returns the grid as the telemetry has it now (the cycle's); ``fault_current(switch)``
    says whether the switch's indicator saw fault current; ``counts`` are customers per load
    (default :func:`~opendso.grid.customers.customer_counts`).
    """

    def __init__(
        self,
        store: OutageStore,
        grid: Callable[[], Grid],
        *,
        fault_current: Callable[[str], bool],
        counts: npt.ArrayLike | None = None,
        actor: str = "telemetry",
    ) -> None:
        self.store = store
        self.grid = grid
        self.fault_current = fault_current
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self.actor = actor
        self._before = grid()
        self._live = analyse_topology(self._before).node_energised
        self._by_switch: dict[str, int] = {}

    def outage_of(self, switch: str) -> int | None:
        """The id of the open outage the opening of ``switch`` caused, if the tracker recorded one."""
        return self._by_switch.get(switch)

    def on_cycle(self, result: CycleResult) -> None:
        """Monitor subscriber: record what this cycle's switch changes interrupted and restored."""
        if not result.switch_changes:
            return
        after = self.grid()
        live = analyse_topology(after).node_energised
        if live.shape != self._live.shape:  # another grid: start again from it
            self._before, self._live = after, live
            return
        names = after.names_of("node")
        at = result.time if result.time.tzinfo is not None else result.time.replace(tzinfo=UTC)
        try:
            back = {str(n) for n in names[live & ~self._live]}
            if back:
                self._restore(back, at)
            if (self._live & ~live).any():
                self._interrupt(result.switch_changes, after, at)
        except OpenDSOError:
            log.exception("event=outage_tracking_failed changes=%s", result.switch_changes)
        finally:
            self._before, self._live = after, live

    def _restore(self, nodes: set[str], at: datetime) -> None:
        with self.store.locked:
            for record in self.store.open_outages():
                off = (
                    {ld.node for ld in record.loads if ld.restored is None} if record.loads_known else set(record.nodes)
                )
                mine = sorted(off & nodes) if record.loads_known else []
                if not mine:
                    continue
                changed = add_restoration_step(record, max(at, _last_time(record)), nodes=mine, actor=self.actor)
                self.store.save(changed, now=datetime.now(UTC))
                log.info("event=outage_restoration outage=%s nodes=%d", record.id, len(mine))

    def _interrupt(self, changes: list[str], after: Grid, at: datetime) -> None:
        before = self._before
        closed_before = dict(zip(before.switch_names.tolist(), before.switches["closed"].tolist(), strict=True))
        closed_after = dict(zip(after.switch_names.tolist(), after.switches["closed"].tolist(), strict=True))
        for switch in changes:
            if not (closed_before.get(switch) and not closed_after.get(switch)):
                continue
            source = OutageSource.TRIP if self.fault_current(switch) else OutageSource.PLANNED
            record = open_outage_from_trip(before, switch, at, counts=self.counts, actor=self.actor, source=source)
            if not record.nodes:
                continue
            saved = self.store.save(record, now=datetime.now(UTC))
            if saved.id is not None:
                self._by_switch[switch] = saved.id
            log.info(
                "event=outage_opened outage=%s switch=%s source=%s customers=%d",
                saved.id,
                switch,
                source,
                saved.customers,
            )


def _last_time(record: OutageRecord) -> datetime:
    return max([record.start, *(s.end for s in record.steps)])

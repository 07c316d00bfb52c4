"""Alarm state that outlives a restart: acknowledgements, shelves, out-of-service alarms, suppressed areas.

Without it a restart forgets what the operators did: acknowledged alarms come back
unacknowledged, shelves and out-of-service states vanish, and alarms that returned to normal
unacknowledged are lost. :class:`AlarmStore` keeps, in the ``alarm_state`` table (migration
0004, SQLite and PostgreSQL alike), one row per channel whose state differs from normal and
acknowledged or that is shelved or out of service, and the suppressed areas in
``alarm_suppression``.

Writes are incremental: the monitors mark the channels whose persistent state changed
(:meth:`~opendso.operations.alarms.AlarmMonitor.take_dirty`), and :meth:`AlarmStore.persist`
writes those rows in one transaction, after every cycle that changed something and after every
operator action. Snapshots are taken under the caller's lock (the one held while a cycle runs)
and written under the store's own lock, so rows reach the database in the order their
snapshots were taken. While the database is unreachable the rows stay marked and are written
by a later call; nothing is lost while the process runs.

:meth:`AlarmStore.restore` reads everything back into the monitors when the monitor starts,
before the first cycle; the cycle then goes on from the restored state (ISA-18.2 clause 5: an
alarm keeps its state, and OPC UA Part 9 5.8.17 asks the same of shelving across a restart).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import sqlalchemy as sa

from opendso.operations.alarms import AlarmMonitor, ChannelState
from opendso.operations.cycle import AreaSuppression
from opendso.store.engine import UNAVAILABLE_ERRORS
from opendso.store.schema import alarm_state, alarm_suppression
from opendso.timeutil import from_epoch_us, to_epoch_us

log = logging.getLogger(__name__)

_CHUNK = 500  # keys per IN (...) list


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1e6)


def _s(us: int | None) -> float | None:
    return None if us is None else int(us) / 1e6


class AlarmStore:
    """Persist and restore the alarm state of a set of monitors (see the module docstring)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._write = threading.Lock()

    # -- channel states -----------------------------------------------------------------------------
    def persist(self, monitors: Sequence[AlarmMonitor], lock: AbstractContextManager[object]) -> int:
        """Write the channels changed since the last call; return how many rows were written.

        ``lock`` is held while the monitors' state is read. A database that cannot be reached
        is logged and the channels stay marked for the next call.
        """
        with self._write:
            with lock:
                states = [(m, m.take_dirty()) for m in monitors]
            changed = [s for _, batch in states for s in batch]
            if not changed:
                return 0
            try:
                self.write(changed)
            except UNAVAILABLE_ERRORS as exc:
                with lock:
                    for monitor, batch in states:
                        monitor.mark_dirty(s.key for s in batch)
                log.warning("event=alarm_state_not_saved rows=%d error=%s", len(changed), type(exc).__name__)
                return 0
            return len(changed)

    def write(self, states: Iterable[ChannelState]) -> None:
        """Write channel states in one transaction: default states delete their row, others replace it."""
        now_us = to_epoch_us(datetime.now(UTC))
        by_key = {s.key: s for s in states}  # the last state of a key wins
        keys = list(by_key)
        rows = [
            {
                "key": s.key,
                "severity": s.severity,
                "value": s.value,
                "since_us": _us(s.since),
                "acknowledged": s.acknowledged,
                "shelved_until_us": _us(s.shelved_until),
                "shelved_at_us": _us(s.shelved_at),
                "shelved_by": s.shelved_by,
                "shelve_reason": s.shelve_reason,
                "out_of_service": s.out_of_service,
                "out_of_service_us": _us(s.out_of_service_since),
                "out_of_service_by": s.out_of_service_by,
                "out_of_service_reason": s.out_of_service_reason,
                "updated_us": now_us,
            }
            for s in by_key.values()
            if not s.is_default
        ]
        with self.engine.begin() as conn:
            for k in range(0, len(keys), _CHUNK):
                conn.execute(sa.delete(alarm_state).where(alarm_state.c.key.in_(keys[k : k + _CHUNK])))
            if rows:
                conn.execute(sa.insert(alarm_state), rows)

    def load(self) -> dict[str, ChannelState]:
        """Every saved channel state, by key."""
        t = alarm_state
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t)).all()
        return {
            r.key: ChannelState(
                key=r.key,
                severity=int(r.severity),
                value=None if r.value is None else float(r.value),
                since=_s(r.since_us),
                acknowledged=bool(r.acknowledged),
                shelved_until=_s(r.shelved_until_us),
                shelved_at=_s(r.shelved_at_us),
                shelved_by=r.shelved_by,
                shelve_reason=r.shelve_reason,
                out_of_service=bool(r.out_of_service),
                out_of_service_since=_s(r.out_of_service_us),
                out_of_service_by=r.out_of_service_by,
                out_of_service_reason=r.out_of_service_reason,
            )
            for r in rows
        }

    # -- suppressed areas ---------------------------------------------------------------------------
    def save_area(self, suppression: AreaSuppression) -> None:
        """Record that an area is suppressed by design."""
        since_us = to_epoch_us(suppression.since)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(alarm_suppression).where(alarm_suppression.c.area == suppression.area))
            conn.execute(
                sa.insert(alarm_suppression).values(
                    area=suppression.area, reason=suppression.reason, actor=suppression.actor, since_us=since_us
                )
            )

    def delete_area(self, area: str) -> None:
        """Forget an area's suppression."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(alarm_suppression).where(alarm_suppression.c.area == area))

    def load_areas(self) -> list[AreaSuppression]:
        """Every saved area suppression, oldest first."""
        t = alarm_suppression
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.since_us, t.c.area)).all()
        return [AreaSuppression(r.area, r.reason, r.actor, from_epoch_us(int(r.since_us))) for r in rows]

    # -- restore ------------------------------------------------------------------------------------
    def restore(self, monitors: Sequence[AlarmMonitor]) -> int:
        """Load the saved channel states into ``monitors``; return how many channels were restored.

        Rows for channels the monitors no longer have (the grid changed) are left alone and logged.
        """
        states = self.load()
        restored = sum(m.restore(states) for m in monitors)
        if restored != len(states):
            log.warning("event=alarm_state_unmatched rows=%d restored=%d", len(states), restored)
        log.info("event=alarm_state_restored channels=%d", restored)
        return restored


__all__ = ["AlarmStore"]

"""The outage records in the database: read and write whole outages, customer calls, an imported history.

:class:`OutageStore` keeps the records of :mod:`opendso.operations.outages` in the tables of
:mod:`opendso.store.outage_schema` (migration 0007). An outage is written whole, in one
transaction (its row, its restoration steps and its interrupted loads), so a reader never sees
half of an operator's change. The records here are plain data (names, counts, UTC times); what
they mean and how they change is the operations layer's business.

:meth:`OutageStore.interruptions` gives the interruption rows the IEEE 1366 indices count, in
the columns of the outage CSV (one row per restoration step), and
:meth:`OutageStore.sustained_loads` the loads with a sustained interruption (the distinct
customers of CAIFI and CTAIDI, the energy not supplied), where the records know them individually.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from opendso.errors import ConflictError, NotFoundError
from opendso.store.outage_schema import outage_calls, outage_loads, outage_steps, outages
from opendso.timeutil import from_epoch_us, to_epoch_us

__all__ = [
    "MOMENTARY_MAX_US",
    "CallRecord",
    "InterruptionRows",
    "LoadRecord",
    "OutageRecord",
    "OutageStore",
    "StepRecord",
    "SustainedLoad",
]

#: IEEE 1366: an interruption of 5 minutes or less is momentary (the same boundary as the indices').
MOMENTARY_MAX_US = 300 * 1_000_000
_CHUNK = 500


@dataclass(frozen=True)
class StepRecord:
    """One restoration step: ``customers`` back at ``end`` after being off since ``start`` (``nodes`` when known)."""

    seq: int
    start: datetime
    end: datetime
    customers: int
    actor: str
    feeder: str | None = None
    nodes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the step as plain JSON-ready data."""
        return {
            "seq": self.seq,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "customers": self.customers,
            "feeder": self.feeder,
            "nodes": list(self.nodes),
            "actor": self.actor,
        }


@dataclass(frozen=True)
class LoadRecord:
    """One load an outage interrupted: its customers, its active power (W) and when it came back (None: still off)."""

    load: str
    node: str
    customers: int
    restored: datetime | None = None
    p_w: float | None = None


@dataclass(frozen=True)
class OutageRecord:
    """One outage as stored (``id`` is None until it is first saved)."""

    source: str
    state: str
    start: datetime
    customers: int
    created_by: str
    id: int | None = None
    external_id: str | None = None
    device: str | None = None
    feeder: str | None = None
    cause: str | None = None
    end: datetime | None = None
    etr: datetime | None = None
    crew: str | None = None
    crew_assigned: datetime | None = None
    loads_known: bool = False
    nodes: tuple[str, ...] = ()
    steps: tuple[StepRecord, ...] = ()
    loads: tuple[LoadRecord, ...] = field(default=(), repr=False)

    @property
    def customers_restored(self) -> int:
        """Customers brought back by the steps so far."""
        return sum(s.customers for s in self.steps)

    @property
    def customers_off(self) -> int:
        """Customers still without supply."""
        return self.customers - self.customers_restored

    def to_dict(self, *, with_loads: bool = False) -> dict[str, Any]:
        """Return the outage as plain JSON-ready data (times ISO 8601 UTC); ``with_loads`` lists its loads."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        out: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "state": self.state,
            "external_id": self.external_id,
            "device": self.device,
            "feeder": self.feeder,
            "cause": self.cause,
            "start": iso(self.start),
            "end": iso(self.end),
            "etr": iso(self.etr),
            "crew": self.crew,
            "crew_assigned": iso(self.crew_assigned),
            "customers": self.customers,
            "customers_off": self.customers_off,
            "loads_known": self.loads_known,
            "nodes": list(self.nodes),
            "steps": [s.to_dict() for s in self.steps],
        }
        if with_loads:
            out["loads"] = [
                {
                    "load": ld.load,
                    "node": ld.node,
                    "customers": ld.customers,
                    "p_w": ld.p_w,
                    "restored": iso(ld.restored),
                }
                for ld in self.loads
            ]
        return out


@dataclass(frozen=True)
class CallRecord:
    """One customer call: the load (when known) and node, the time, what was said, who logged it."""

    ts: datetime
    node: str
    text: str
    actor: str
    load: str | None = None
    outage_id: int | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the call as plain JSON-ready data."""
        return {
            "id": self.id,
            "outage_id": self.outage_id,
            "time": self.ts.isoformat(),
            "load": self.load,
            "node": self.node,
            "text": self.text,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class SustainedLoad:
    """One sustained interruption of one load: its customers, how long (µs), its active power (W, when known)."""

    load: str
    customers: int
    duration_us: int
    p_w: float | None


@dataclass(frozen=True)
class InterruptionRows:
    """Interruption rows in the outage CSV's columns (one per restoration step), as plain lists."""

    event: list[str]
    start_us: list[int]
    end_us: list[int]
    customers: list[int]
    feeder: list[str]
    cause: list[str]


def _us(value: datetime | None) -> int | None:
    return None if value is None else to_epoch_us(value)


def _dt(value: int | None) -> datetime | None:
    return None if value is None else from_epoch_us(int(value))


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every insert here has an autoincrement key
        raise RuntimeError("the database returned no id")
    return int(key[0])


def _event_key(outage_id: int) -> str:
    return f"#{outage_id}"


class OutageStore:
    """Read and write outage records and customer calls (see the module docstring).

    ``locked`` (a re-entrant lock, one per store) is held by callers that read, change and save
    an outage, so two changes of one process never interleave.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.locked = threading.RLock()

    # -- outages --------------------------------------------------------------------------------------
    def save(self, record: OutageRecord, *, now: datetime) -> OutageRecord:
        """Write ``record`` whole in one transaction (insert when its id is None); return it with its id."""
        with self.engine.begin() as conn:
            return self._save(conn, record, now=now)

    def save_many(self, records: Sequence[OutageRecord], *, now: datetime) -> list[OutageRecord]:
        """Write new records in one transaction: all or none (an external id stored already is a conflict)."""
        try:
            with self.engine.begin() as conn:
                return [self._save(conn, r, now=now) for r in records]
        except sa.exc.IntegrityError:
            raise ConflictError("an outage with one of these event ids is stored already: nothing was stored") from None

    def _save(self, conn: sa.Connection, record: OutageRecord, *, now: datetime) -> OutageRecord:
        values = {
            "source": record.source,
            "state": record.state,
            "external_id": record.external_id,
            "device": record.device,
            "feeder": record.feeder,
            "cause": record.cause,
            "start_us": to_epoch_us(record.start),
            "end_us": _us(record.end),
            "etr_us": _us(record.etr),
            "crew": record.crew,
            "crew_us": _us(record.crew_assigned),
            "customers": record.customers,
            "loads_known": record.loads_known,
            "nodes": list(record.nodes),
            "created_by": record.created_by,
            "updated_us": to_epoch_us(now),
        }
        if record.id is None:
            outage_id = _new_id(conn.execute(sa.insert(outages).values(**values)))
            record = replace(record, id=outage_id)
        else:
            outage_id = record.id
            done = conn.execute(sa.update(outages).where(outages.c.id == outage_id).values(**values))
            if done.rowcount != 1:
                raise NotFoundError(f"no outage {outage_id}")
            conn.execute(sa.delete(outage_steps).where(outage_steps.c.outage_id == outage_id))
            conn.execute(sa.delete(outage_loads).where(outage_loads.c.outage_id == outage_id))
        if record.steps:
            conn.execute(
                sa.insert(outage_steps),
                [
                    {
                        "outage_id": outage_id,
                        "seq": s.seq,
                        "start_us": to_epoch_us(s.start),
                        "end_us": to_epoch_us(s.end),
                        "customers": s.customers,
                        "feeder": s.feeder,
                        "nodes": list(s.nodes),
                        "actor": s.actor,
                    }
                    for s in record.steps
                ],
            )
        if record.loads:
            conn.execute(
                sa.insert(outage_loads),
                [
                    {
                        "outage_id": outage_id,
                        "load": ld.load,
                        "node": ld.node,
                        "customers": ld.customers,
                        "restored_us": _us(ld.restored),
                        "p_w": ld.p_w,
                    }
                    for ld in record.loads
                ],
            )
        return record

    def get(self, outage_id: int) -> OutageRecord:
        """Return outage ``outage_id`` with its steps and loads; :class:`NotFoundError` when there is none."""
        found = self._read([outage_id])
        if not found:
            raise NotFoundError(f"no outage {outage_id}")
        return found[0]

    def select(
        self, *, states: Iterable[str] = (), before: int | None = None, limit: int = 100, with_loads: bool = False
    ) -> list[OutageRecord]:
        """Return outages newest first (by id): of ``states`` when given, with an id below ``before``."""
        query = sa.select(outages.c.id).order_by(outages.c.id.desc()).limit(limit)
        wanted = list(states)
        if wanted:
            query = query.where(outages.c.state.in_(wanted))
        if before is not None:
            query = query.where(outages.c.id < before)
        with self.engine.connect() as conn:
            ids = [int(r[0]) for r in conn.execute(query)]
        return self._read(ids, with_loads=with_loads)

    def open_outages(self) -> list[OutageRecord]:
        """Return every outage not restored or cancelled (predicted, confirmed, restoring), oldest first."""
        query = sa.select(outages.c.id).where(outages.c.state.in_(("predicted", "confirmed", "restoring")))
        with self.engine.connect() as conn:
            ids = sorted(int(r[0]) for r in conn.execute(query))
        return self._read(ids)

    def _read(self, ids: Sequence[int], *, with_loads: bool = True) -> list[OutageRecord]:
        if not ids:
            return []
        rows: dict[int, sa.Row[Any]] = {}
        steps: dict[int, list[StepRecord]] = {i: [] for i in ids}
        loads: dict[int, list[LoadRecord]] = {i: [] for i in ids}
        with self.engine.connect() as conn:
            for k in range(0, len(ids), _CHUNK):
                chunk = list(ids[k : k + _CHUNK])
                for r in conn.execute(sa.select(outages).where(outages.c.id.in_(chunk))):
                    rows[int(r.id)] = r
                for s in conn.execute(
                    sa.select(outage_steps).where(outage_steps.c.outage_id.in_(chunk)).order_by(outage_steps.c.seq)
                ):
                    steps[int(s.outage_id)].append(
                        StepRecord(
                            seq=int(s.seq),
                            start=from_epoch_us(int(s.start_us)),
                            end=from_epoch_us(int(s.end_us)),
                            customers=int(s.customers),
                            actor=str(s.actor),
                            feeder=s.feeder,
                            nodes=tuple(str(n) for n in s.nodes or ()),
                        )
                    )
                if with_loads:
                    for ld in conn.execute(
                        sa.select(outage_loads).where(outage_loads.c.outage_id.in_(chunk)).order_by(outage_loads.c.load)
                    ):
                        loads[int(ld.outage_id)].append(
                            LoadRecord(
                                load=str(ld.load),
                                node=str(ld.node),
                                customers=int(ld.customers),
                                restored=_dt(ld.restored_us),
                                p_w=None if ld.p_w is None else float(ld.p_w),
                            )
                        )
        out = []
        for i in (i for i in ids if i in rows):
            r = rows[i]
            out.append(
                OutageRecord(
                    id=int(r.id),
                    source=str(r.source),
                    state=str(r.state),
                    external_id=r.external_id,
                    device=r.device,
                    feeder=r.feeder,
                    cause=r.cause,
                    start=from_epoch_us(int(r.start_us)),
                    end=_dt(r.end_us),
                    etr=_dt(r.etr_us),
                    crew=r.crew,
                    crew_assigned=_dt(r.crew_us),
                    customers=int(r.customers),
                    loads_known=bool(r.loads_known),
                    nodes=tuple(str(n) for n in r.nodes or ()),
                    created_by=str(r.created_by),
                    steps=tuple(steps[i]),
                    loads=tuple(loads[i]),
                )
            )
        return out

    def external_ids(self, source: str, candidates: Iterable[str]) -> set[str]:
        """Return which of ``candidates`` are stored already as external ids of ``source``."""
        wanted = sorted(set(candidates))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for k in range(0, len(wanted), _CHUNK):
                query = sa.select(outages.c.external_id).where(
                    outages.c.source == source, outages.c.external_id.in_(wanted[k : k + _CHUNK])
                )
                found.update(str(r[0]) for r in conn.execute(query))
        return found

    # -- calls ----------------------------------------------------------------------------------------
    def add_call(self, call: CallRecord) -> CallRecord:
        """Store a customer call; return it with its id."""
        with self.engine.begin() as conn:
            return self._add_call(conn, call)

    def save_with_call(
        self, record: OutageRecord, call: CallRecord, *, now: datetime
    ) -> tuple[OutageRecord, CallRecord]:
        """Write an outage and the call that joined it in one transaction."""
        with self.engine.begin() as conn:
            saved = self._save(conn, record, now=now)
            return saved, self._add_call(conn, replace(call, outage_id=saved.id))

    @staticmethod
    def _add_call(conn: sa.Connection, call: CallRecord) -> CallRecord:
        new_id = _new_id(
            conn.execute(
                sa.insert(outage_calls).values(
                    outage_id=call.outage_id,
                    ts_us=to_epoch_us(call.ts),
                    load=call.load,
                    node=call.node,
                    text=call.text,
                    actor=call.actor,
                )
            )
        )
        return replace(call, id=new_id)

    def calls(self, outage_id: int, *, limit: int = 1000) -> list[CallRecord]:
        """Return the calls that joined outage ``outage_id``, oldest first."""
        query = (
            sa.select(outage_calls)
            .where(outage_calls.c.outage_id == outage_id)
            .order_by(outage_calls.c.ts_us, outage_calls.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                CallRecord(
                    id=int(r.id),
                    outage_id=r.outage_id,
                    ts=from_epoch_us(int(r.ts_us)),
                    load=r.load,
                    node=str(r.node),
                    text=str(r.text),
                    actor=str(r.actor),
                )
                for r in conn.execute(query)
            ]

    def call_counts(self, outage_ids: Iterable[int]) -> dict[int, int]:
        """Return the number of calls of each outage."""
        wanted = list(outage_ids)
        out = dict.fromkeys(wanted, 0)
        with self.engine.connect() as conn:
            for k in range(0, len(wanted), _CHUNK):
                query = (
                    sa.select(outage_calls.c.outage_id, sa.func.count())
                    .where(outage_calls.c.outage_id.in_(wanted[k : k + _CHUNK]))
                    .group_by(outage_calls.c.outage_id)
                )
                out.update({int(r[0]): int(r[1]) for r in conn.execute(query)})
        return out

    # -- what the reliability indices count -----------------------------------------------------------
    def interruptions(self, *, feeders: Iterable[str] = ()) -> InterruptionRows:
        """Return every restoration step of every outage not cancelled, in the outage CSV's columns.

        The event id is ``#<outage id>``; ``cause`` is the outage's. Customers still off are not
        counted until a step restores them (an open outage's duration is not known yet).
        ``feeders`` keeps only steps on those feeders (an area).
        """
        query = (
            sa.select(
                outage_steps.c.outage_id,
                outage_steps.c.start_us,
                outage_steps.c.end_us,
                outage_steps.c.customers,
                outage_steps.c.feeder,
                outages.c.cause,
            )
            .join(outages, outages.c.id == outage_steps.c.outage_id)
            .where(outages.c.state != "cancelled")
            .order_by(outage_steps.c.outage_id, outage_steps.c.seq)
        )
        wanted = list(feeders)
        if wanted:
            query = query.where(outage_steps.c.feeder.in_(wanted))
        rows = InterruptionRows([], [], [], [], [], [])
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                rows.event.append(_event_key(int(r.outage_id)))
                rows.start_us.append(int(r.start_us))
                rows.end_us.append(int(r.end_us))
                rows.customers.append(int(r.customers))
                rows.feeder.append(r.feeder or "")
                rows.cause.append(r.cause or "")
        return rows

    def sustained_loads(self, *, start_us: int, end_us: int, feeders: Iterable[str] = ()) -> list[SustainedLoad] | None:
        """Return each load interruption longer than 5 minutes of the outages begun in ``[start_us, end_us)``.

        ``None`` when an outage with a sustained step in the period does not know its loads
        individually (then neither CAIFI, CTAIDI nor the energy not supplied can be given). Loads
        still off are left out until restored. ``feeders`` as in :meth:`interruptions`.
        """
        begun = sa.and_(outages.c.state != "cancelled", outages.c.start_us >= start_us, outages.c.start_us < end_us)
        wanted = list(feeders)
        sustained = (outage_steps.c.end_us - outage_steps.c.start_us) > MOMENTARY_MAX_US
        step_query = (
            sa.select(outages.c.id, outages.c.loads_known)
            .join(outage_steps, outage_steps.c.outage_id == outages.c.id)
            .where(begun, sustained, outage_steps.c.customers > 0)
            .distinct()
        )
        if wanted:
            step_query = step_query.where(outage_steps.c.feeder.in_(wanted))
        out: list[SustainedLoad] = []
        with self.engine.connect() as conn:
            hit = conn.execute(step_query).all()
            if any(not bool(r.loads_known) for r in hit):
                return None
            ids = sorted(int(r.id) for r in hit)
            for k in range(0, len(ids), _CHUNK):
                query = (
                    sa.select(
                        outage_loads.c.load,
                        outage_loads.c.customers,
                        outage_loads.c.restored_us,
                        outage_loads.c.p_w,
                        outages.c.start_us,
                        outages.c.end_us,
                    )
                    .join(outages, outages.c.id == outage_loads.c.outage_id)
                    .where(outage_loads.c.outage_id.in_(ids[k : k + _CHUNK]))
                )
                for r in conn.execute(query):
                    back = r.restored_us if r.restored_us is not None else r.end_us
                    if back is None or int(back) - int(r.start_us) <= MOMENTARY_MAX_US:
                        continue  # still off (not counted yet) or back within 5 minutes
                    out.append(
                        SustainedLoad(
                            load=str(r.load),
                            customers=int(r.customers),
                            duration_us=int(back) - int(r.start_us),
                            p_w=None if r.p_w is None else float(r.p_w),
                        )
                    )
        return out

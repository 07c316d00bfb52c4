"""The switching repository: operating tags, safety documents with their devices and earths, earths, fault flags.

:class:`SwitchingStore` keeps the present state of what the safety gate reads beyond the grid
(tables of :mod:`opendso.store.switching_schema`); every change is one transaction, so a
document and its devices and earths are written whole or not at all, and a document's state
moves only from the state the caller saw (compare-and-set: a concurrent change is a
:class:`~opendso.errors.ConflictError`). The store holds plain records (:class:`TagRecord`,
:class:`DocumentRecord`, :class:`EarthRecord`, :class:`FaultRecord`); the operations layer
turns them into the gate's :class:`~opendso.operations.switching.model.SwitchingState` and
decides what is allowed (the document state machine, the earthing rule). The store checks only
what it can check alone: ids exist, a node is not earthed twice, a tag id is unique.

Names are the source's switch and node names; times are aware UTC (integer microseconds in the
database).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from opendso.errors import ConflictError, NotFoundError
from opendso.store.switching_schema import (
    faulted_sections,
    safety_document_devices,
    safety_document_earths,
    safety_documents,
    switching_earths,
    switching_tags,
)
from opendso.timeutil import from_epoch_us, to_epoch_us

__all__ = [
    "DocumentRecord",
    "EarthRecord",
    "FaultRecord",
    "SwitchingRecords",
    "SwitchingStore",
    "TagRecord",
]


@dataclass(frozen=True, slots=True)
class TagRecord:
    """An operating tag on a switch (``kind``: ``do_not_operate`` or ``caution``)."""

    id: str
    switch: str
    kind: str
    text: str
    placed_by: str
    placed_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A safety document, the devices (switches) it isolates and the nodes it earths."""

    id: str
    kind: str
    state: str
    description: str
    devices: tuple[str, ...]
    earths: tuple[str, ...]
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EarthRecord:
    """An earth applied on a node (``kind``: ``earth_switch`` or ``portable``)."""

    node: str
    kind: str
    reference: str
    applied_by: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """A node (section) flagged faulted."""

    node: str
    reason: str
    flagged_by: str
    flagged_at: datetime


@dataclass(frozen=True, slots=True)
class SwitchingRecords:
    """Everything the store holds, read in one transaction."""

    tags: tuple[TagRecord, ...]
    documents: tuple[DocumentRecord, ...]
    earths: tuple[EarthRecord, ...]
    faults: tuple[FaultRecord, ...]


def _now_us(now: datetime | None) -> int:
    return to_epoch_us(now or datetime.now(UTC))


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


class SwitchingStore:
    """Read and change the switching tables of a database (the schema must exist: see :class:`Historian`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- reading ------------------------------------------------------------------------------------
    def load(self) -> SwitchingRecords:
        """Return every tag, document, earth and fault flag, read in one transaction."""
        with self.engine.begin() as conn:
            return SwitchingRecords(
                tags=self._tags(conn),
                documents=self._documents(conn),
                earths=self._earths(conn),
                faults=self._faults(conn),
            )

    def document(self, document_id: str) -> DocumentRecord:
        """Return one document (:class:`NotFoundError` when unknown)."""
        with self.engine.begin() as conn:
            found = self._documents(conn, document_id)
        if not found:
            raise NotFoundError(f"no safety document {document_id!r}")
        return found[0]

    def tag(self, tag_id: str) -> TagRecord:
        """Return one tag (:class:`NotFoundError` when unknown)."""
        with self.engine.begin() as conn:
            found = [t for t in self._tags(conn) if t.id == tag_id]
        if not found:
            raise NotFoundError(f"no tag {tag_id!r}")
        return found[0]

    @staticmethod
    def _tags(conn: sa.Connection) -> tuple[TagRecord, ...]:
        rows = conn.execute(sa.select(switching_tags).order_by(switching_tags.c.placed_us, switching_tags.c.id))
        return tuple(
            TagRecord(r.id, r.switch, r.kind, r.text, r.placed_by, from_epoch_us(int(r.placed_us))) for r in rows
        )

    @staticmethod
    def _documents(conn: sa.Connection, document_id: str | None = None) -> tuple[DocumentRecord, ...]:
        query = sa.select(safety_documents).order_by(safety_documents.c.created_us, safety_documents.c.id)
        devices_q = sa.select(safety_document_devices)
        earths_q = sa.select(safety_document_earths)
        if document_id is not None:
            query = query.where(safety_documents.c.id == document_id)
            devices_q = devices_q.where(safety_document_devices.c.document_id == document_id)
            earths_q = earths_q.where(safety_document_earths.c.document_id == document_id)
        devices: dict[str, list[str]] = {}
        for r in conn.execute(devices_q):
            devices.setdefault(r.document_id, []).append(r.switch)
        earths: dict[str, list[str]] = {}
        for r in conn.execute(earths_q):
            earths.setdefault(r.document_id, []).append(r.node)
        return tuple(
            DocumentRecord(
                id=r.id,
                kind=r.kind,
                state=r.state,
                description=r.description,
                devices=tuple(sorted(devices.get(r.id, []))),
                earths=tuple(sorted(earths.get(r.id, []))),
                created_by=r.created_by,
                created_at=from_epoch_us(int(r.created_us)),
                updated_by=r.updated_by,
                updated_at=from_epoch_us(int(r.updated_us)),
            )
            for r in conn.execute(query)
        )

    @staticmethod
    def _earths(conn: sa.Connection) -> tuple[EarthRecord, ...]:
        rows = conn.execute(sa.select(switching_earths).order_by(switching_earths.c.node))
        return tuple(
            EarthRecord(r.node, r.kind, r.reference, r.applied_by, from_epoch_us(int(r.applied_us))) for r in rows
        )

    @staticmethod
    def _faults(conn: sa.Connection) -> tuple[FaultRecord, ...]:
        rows = conn.execute(sa.select(faulted_sections).order_by(faulted_sections.c.node))
        return tuple(FaultRecord(r.node, r.reason, r.flagged_by, from_epoch_us(int(r.flagged_us))) for r in rows)

    # -- tags ---------------------------------------------------------------------------------------
    def add_tag(self, switch: str, kind: str, text: str, *, actor: str, now: datetime | None = None) -> TagRecord:
        """Place a tag on a switch and return it (with a new id)."""
        ts = _now_us(now)
        tag_id = _new_id("tag")
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(switching_tags).values(
                    id=tag_id, switch=switch, kind=kind, text=text, placed_by=actor, placed_us=ts
                )
            )
        return TagRecord(tag_id, switch, kind, text, actor, from_epoch_us(ts))

    def remove_tag(self, tag_id: str) -> TagRecord:
        """Remove a tag and return what it was (:class:`NotFoundError` when unknown)."""
        with self.engine.begin() as conn:
            found = [t for t in self._tags(conn) if t.id == tag_id]
            if not found:
                raise NotFoundError(f"no tag {tag_id!r}")
            conn.execute(sa.delete(switching_tags).where(switching_tags.c.id == tag_id))
        return found[0]

    # -- documents ----------------------------------------------------------------------------------
    def add_document(
        self,
        kind: str,
        state: str,
        *,
        devices: Iterable[str],
        earths: Iterable[str],
        description: str,
        actor: str,
        now: datetime | None = None,
    ) -> DocumentRecord:
        """Create a document with its devices and earths in one transaction and return it (with a new id)."""
        ts = _now_us(now)
        doc_id = _new_id("ptw" if kind == "permit_to_work" else "sft")
        devs, nodes = sorted(set(devices)), sorted(set(earths))
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(safety_documents).values(
                    id=doc_id,
                    kind=kind,
                    state=state,
                    description=description,
                    created_by=actor,
                    created_us=ts,
                    updated_by=actor,
                    updated_us=ts,
                )
            )
            if devs:
                conn.execute(sa.insert(safety_document_devices), [{"document_id": doc_id, "switch": d} for d in devs])
            if nodes:
                conn.execute(sa.insert(safety_document_earths), [{"document_id": doc_id, "node": n} for n in nodes])
        return self.document(doc_id)

    def set_document_state(
        self, document_id: str, *, expected: str, state: str, actor: str, now: datetime | None = None
    ) -> DocumentRecord:
        """Move a document from ``expected`` to ``state`` (compare-and-set) and return it.

        :class:`NotFoundError` when unknown; :class:`ConflictError` naming both states when the
        document is no longer in ``expected`` (someone else moved it meanwhile).
        """
        ts = _now_us(now)
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(safety_documents)
                .where(safety_documents.c.id == document_id, safety_documents.c.state == expected)
                .values(state=state, updated_by=actor, updated_us=ts)
            )
            if done.rowcount != 1:
                current = conn.execute(
                    sa.select(safety_documents.c.state).where(safety_documents.c.id == document_id)
                ).scalar_one_or_none()
                if current is None:
                    raise NotFoundError(f"no safety document {document_id!r}")
                raise ConflictError(
                    f"safety document {document_id} is {current}, not {expected}: "
                    f"it cannot go from {current} to {state}"
                )
        return self.document(document_id)

    # -- earths -------------------------------------------------------------------------------------
    def add_earth(
        self, node: str, kind: str, reference: str, *, actor: str, now: datetime | None = None
    ) -> EarthRecord:
        """Record an earth on a node (:class:`ConflictError` when the node is earthed already)."""
        ts = _now_us(now)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(switching_earths).values(
                        node=node, kind=kind, reference=reference, applied_by=actor, applied_us=ts
                    )
                )
        except sa.exc.IntegrityError:
            raise ConflictError(f"node {node} is earthed already") from None
        return EarthRecord(node, kind, reference, actor, from_epoch_us(ts))

    def remove_earth(self, node: str) -> EarthRecord:
        """Remove the earth of a node and return what it was (:class:`NotFoundError` when none)."""
        with self.engine.begin() as conn:
            found = [e for e in self._earths(conn) if e.node == node]
            if not found:
                raise NotFoundError(f"no earth recorded on node {node!r}")
            conn.execute(sa.delete(switching_earths).where(switching_earths.c.node == node))
        return found[0]

    # -- fault flags --------------------------------------------------------------------------------
    def flag_faulted(self, node: str, reason: str, *, actor: str, now: datetime | None = None) -> FaultRecord:
        """Flag a node faulted (:class:`ConflictError` when it is flagged already)."""
        ts = _now_us(now)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(faulted_sections).values(node=node, reason=reason, flagged_by=actor, flagged_us=ts)
                )
        except sa.exc.IntegrityError:
            raise ConflictError(f"node {node} is flagged faulted already") from None
        return FaultRecord(node, reason, actor, from_epoch_us(ts))

    def clear_faulted(self, node: str) -> FaultRecord:
        """Clear a node's fault flag and return what it was (:class:`NotFoundError` when not flagged)."""
        with self.engine.begin() as conn:
            found = [f for f in self._faults(conn) if f.node == node]
            if not found:
                raise NotFoundError(f"node {node!r} is not flagged faulted")
            conn.execute(sa.delete(faulted_sections).where(faulted_sections.c.node == node))
        return found[0]

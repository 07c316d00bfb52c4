"""Tags, safety documents, earths and fault flags: the switching register and the document state machine.

:class:`SwitchingRegister` is what people change through the API (tags, permits to work and
sanctions for test, earths, fault flags), stored in :class:`~opendso.store.switching.SwitchingStore`;
:meth:`SwitchingRegister.state` gives the gate its
:class:`~opendso.operations.switching.model.SwitchingState`. Every change is one transaction in
the store, then one event in the event log (``switching.<what>``) and one audit record (actor,
client address, reason). Free text passes :func:`~opendso.text.check_text`.

The safety document state machine (issue 10, item 1)::

    draft --issue--> issued --start--> in_work --clear--> cleared
    draft --cancel--> cancelled          issued --cancel--> cancelled

Every other move is refused with :class:`~opendso.errors.ConflictError` naming the state it is
in and the state asked for. Issuing a document requires each device it lists to be open and each
node it earths to be dead (isolated from every source), checked on the grid as it is now, the
same earthing rule as for recording an earth: an earth is never applied to a live section.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from opendso.errors import ConflictError, InputError, NotFoundError, UnknownSwitchError
from opendso.grid.model import BRANCH_COMPONENTS, Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.switching.model import (
    UNTRUSTED_QUALITY,
    DocumentKind,
    DocumentState,
    Earth,
    EarthKind,
    SafetyDocument,
    SwitchingState,
    Tag,
    TagKind,
)
from opendso.quality import Quality
from opendso.store.events import EventLog
from opendso.store.switching import (
    DocumentRecord,
    EarthRecord,
    FaultRecord,
    SwitchingRecords,
    SwitchingStore,
    TagRecord,
)
from opendso.text import check_text

__all__ = [
    "DOCUMENT_TRANSITIONS",
    "AuditSink",
    "DocumentAction",
    "SwitchingRegister",
    "earth_refusal",
    "next_document_state",
    "record_dict",
    "switching_state",
]

#: Longest reason or tag text.
MAX_TEXT = 1000


class DocumentAction(enum.StrEnum):
    """What a person does to a safety document."""

    ISSUE = "issue"
    START = "start"
    CLEAR = "clear"
    CANCEL = "cancel"


#: The one allowed move of each (state, action); every other is refused.
DOCUMENT_TRANSITIONS: Mapping[tuple[DocumentState, DocumentAction], DocumentState] = {
    (DocumentState.DRAFT, DocumentAction.ISSUE): DocumentState.ISSUED,
    (DocumentState.ISSUED, DocumentAction.START): DocumentState.IN_WORK,
    (DocumentState.IN_WORK, DocumentAction.CLEAR): DocumentState.CLEARED,
    (DocumentState.DRAFT, DocumentAction.CANCEL): DocumentState.CANCELLED,
    (DocumentState.ISSUED, DocumentAction.CANCEL): DocumentState.CANCELLED,
}

_TARGET = {
    DocumentAction.ISSUE: DocumentState.ISSUED,
    DocumentAction.START: DocumentState.IN_WORK,
    DocumentAction.CLEAR: DocumentState.CLEARED,
    DocumentAction.CANCEL: DocumentState.CANCELLED,
}


def next_document_state(current: DocumentState, action: DocumentAction, *, document: str = "") -> DocumentState:
    """Return the state ``action`` moves a document in ``current`` to.

    Every move not in :data:`DOCUMENT_TRANSITIONS` raises :class:`ConflictError` naming from and to.
    """
    target = DOCUMENT_TRANSITIONS.get((current, action))
    if target is None:
        name = f"safety document {document}" if document else "a safety document"
        raise ConflictError(f"{name} cannot go from {current.value} to {_TARGET[action].value} ({action.value})")
    return target


class AuditSink(Protocol):
    """Where actions are audited (:meth:`opendso.service.audit.AuditTrail.append` fits)."""

    def __call__(
        self,
        action: str,
        *,
        actor: str,
        result: str = ...,
        element: str | None = ...,
        source_ip: str | None = ...,
        reason: str | None = ...,
        details: Mapping[str, Any] | None = ...,
    ) -> object: ...


def earth_refusal(grid: Grid, node: str, qualities: Mapping[str, Quality] | None = None) -> str | None:
    """Why an earth may not be applied on ``node`` of ``grid`` as it is now (None: it may).

    The earthing rule of the safety gate seen from the other side: an earth is never applied to a
    section that is live (connected to a source through closed switches), nor to one whose
    isolation cannot be trusted: with ``qualities`` (switch name -> quality of its status, from
    the telemetry), every switch of the dead section and on its boundary must report a state
    that is not invalid, intermediate, stale or manually entered. :class:`NotFoundError` for an
    unknown node.
    """
    names = grid.names_of("node")
    rows = np.flatnonzero(names == node)
    if not rows.size:
        raise NotFoundError(f"no node {node!r} in grid {grid.name}")
    row = int(rows[0])
    topo = analyse_topology(grid)
    if bool(topo.node_energised[row]):
        return f"node {node} is live (connected to a source through closed switches): it is not isolated"
    if qualities is None:
        return None
    for switch in _switches_of_section(grid, topo.component == topo.component[row]):
        quality = qualities.get(switch)
        if quality is None:
            return f"node {node}: the state of switch {switch}, which isolates it, is unknown"
        bad = Quality(quality) & UNTRUSTED_QUALITY
        if bad:
            flags = "|".join(q.name or "" for q in Quality if q.value and q in bad)
            return f"node {node}: the state of switch {switch}, which isolates it, is not trustworthy ({flags})"
    return None


def _switches_of_section(grid: Grid, section: npt.NDArray[np.bool_]) -> list[str]:
    """Switches at a node of ``section`` or on a branch with an end in it (its isolation points and its inside)."""
    switches = grid.switches
    if not switches.size:
        return []
    touches = section[grid.node_positions(switches["node"])].copy()
    for component in BRANCH_COMPONENTS:
        if not grid.count(component):
            continue
        array = grid.component(component)
        ends = section[grid.node_positions(array["from_node"])] | section[grid.node_positions(array["to_node"])]
        touches |= np.isin(switches["element"], array["id"][ends])
    return [str(n) for n in grid.switch_names[touches]]


def switching_state(records: SwitchingRecords, qualities: Mapping[str, Quality] | None = None) -> SwitchingState:
    """Return the gate's view of stored records (tags, documents, earths, fault flags) and state qualities."""
    return SwitchingState(
        tags=tuple(Tag(t.id, t.switch, TagKind(t.kind), t.text) for t in records.tags),
        documents=tuple(
            SafetyDocument(
                d.id, DocumentKind(d.kind), DocumentState(d.state), frozenset(d.devices), frozenset(d.earths)
            )
            for d in records.documents
        ),
        earths=tuple(Earth(e.node, EarthKind(e.kind), e.reference) for e in records.earths),
        qualities=qualities,
        faulted=frozenset(f.node for f in records.faults),
    )


def record_dict(record: object) -> dict[str, Any]:
    """A stored record (tag, document, earth, fault) as plain values: times ISO 8601, tuples as lists."""
    out: dict[str, Any] = {}
    for name in record.__slots__:  # type: ignore[attr-defined]
        value = getattr(record, name)
        out[name] = (
            value.isoformat() if isinstance(value, datetime) else list(value) if isinstance(value, tuple) else value
        )
    return out


@dataclass
class SwitchingRegister:
    """Tags, safety documents, earths and fault flags: checked, stored, logged and audited (module docstring).

    ``grid`` returns the grid as it is now (the switch states the field reports); ``qualities``
    the quality of switch states from the telemetry (None: the grid's states are trusted), which
    an earth's isolation must have.
    """

    store: SwitchingStore
    grid: Callable[[], Grid]
    events: EventLog | None = None
    audit: AuditSink | None = None
    qualities: Callable[[], Mapping[str, Quality] | None] | None = None

    def _qualities(self) -> Mapping[str, Quality] | None:
        return self.qualities() if self.qualities is not None else None

    # -- reading ------------------------------------------------------------------------------------
    def state(self, qualities: Mapping[str, Quality] | None = None) -> SwitchingState:
        """The gate's :class:`SwitchingState` from the store, with ``qualities`` of the states (None: trusted)."""
        return switching_state(self.store.load(), qualities)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Everything held, as plain values (for the API): tags, documents, earths, faults."""
        records = self.store.load()
        return {
            "tags": [record_dict(t) for t in records.tags],
            "documents": [record_dict(d) for d in records.documents],
            "earths": [record_dict(e) for e in records.earths],
            "faults": [record_dict(f) for f in records.faults],
        }

    # -- helpers ------------------------------------------------------------------------------------
    def _switch(self, grid: Grid, name: str) -> int:
        rows = np.flatnonzero(grid.switch_names == name)
        if not rows.size:
            raise UnknownSwitchError(name)
        return int(rows[0])

    def _node(self, grid: Grid, name: str) -> None:
        if not np.any(grid.names_of("node") == name):
            raise NotFoundError(f"no node {name!r} in grid {grid.name}")

    def _record(
        self,
        kind: str,
        *,
        actor: str,
        element: str,
        source_ip: str | None,
        reason: str | None,
        payload: Mapping[str, Any],
    ) -> None:
        if self.events is not None:
            self.events.append(f"switching.{kind}", actor=actor, element=element, payload={**payload, "reason": reason})
        if self.audit is not None:
            self.audit(
                f"switching.{kind}",
                actor=actor,
                element=element,
                source_ip=source_ip,
                reason=reason,
                details=dict(payload),
            )

    # -- tags ---------------------------------------------------------------------------------------
    def place_tag(
        self, switch: str, kind: TagKind | str, text: str, *, actor: str, source_ip: str | None = None
    ) -> TagRecord:
        """Place a do-not-operate or caution tag on a switch, with its text (why)."""
        tag_kind = _enum(TagKind, kind, "tag kind")
        text = check_text("tag text", text, max_len=MAX_TEXT)
        self._switch(self.grid(), switch)
        tag = self.store.add_tag(switch, tag_kind.value, text, actor=actor)
        self._record(
            "tag_placed", actor=actor, element=switch, source_ip=source_ip, reason=text, payload=record_dict(tag)
        )
        return tag

    def remove_tag(self, tag_id: str, reason: str, *, actor: str, source_ip: str | None = None) -> TagRecord:
        """Remove a tag, with a reason."""
        reason = check_text("reason", reason, max_len=MAX_TEXT)
        tag = self.store.remove_tag(tag_id)
        self._record(
            "tag_removed", actor=actor, element=tag.switch, source_ip=source_ip, reason=reason, payload=record_dict(tag)
        )
        return tag

    # -- documents ----------------------------------------------------------------------------------
    def create_document(
        self,
        kind: DocumentKind | str,
        *,
        devices: Iterable[str],
        earths: Iterable[str],
        description: str,
        actor: str,
        source_ip: str | None = None,
    ) -> DocumentRecord:
        """Create a draft document listing the switches it isolates and the nodes it earths (each must exist)."""
        doc_kind = _enum(DocumentKind, kind, "document kind")
        description = check_text("description", description, max_len=MAX_TEXT)
        devs, nodes = list(devices), list(earths)
        if not devs:
            raise InputError("a safety document lists at least one isolating device")
        grid = self.grid()
        for name in devs:
            self._switch(grid, name)
        for node in nodes:
            self._node(grid, node)
        doc = self.store.add_document(
            doc_kind.value,
            DocumentState.DRAFT.value,
            devices=devs,
            earths=nodes,
            description=description,
            actor=actor,
        )
        self._record(
            "document_created",
            actor=actor,
            element=doc.id,
            source_ip=source_ip,
            reason=description,
            payload=record_dict(doc),
        )
        return doc

    def move_document(
        self,
        document_id: str,
        action: DocumentAction | str,
        *,
        actor: str,
        reason: str | None = None,
        source_ip: str | None = None,
    ) -> DocumentRecord:
        """Issue, start, clear or cancel a document (see the state machine in the module docstring).

        Issuing checks each device open and each earthed node dead on the grid as it is now
        (:class:`ConflictError` naming the device or node otherwise).
        """
        act = _enum(DocumentAction, action, "document action")
        if reason is not None:
            reason = check_text("reason", reason, max_len=MAX_TEXT)
        doc = self.store.document(document_id)
        current = DocumentState(doc.state)
        target = next_document_state(current, act, document=doc.id)
        if act is DocumentAction.ISSUE:
            grid = self.grid()
            for name in doc.devices:
                if bool(grid.switches["closed"][self._switch(grid, name)]):
                    raise ConflictError(f"safety document {doc.id} cannot be issued: its device {name} is closed")
            qualities = self._qualities()
            for node in doc.earths:
                why = earth_refusal(grid, node, qualities)
                if why is not None:
                    raise ConflictError(f"safety document {doc.id} cannot be issued: {why}")
        moved = self.store.set_document_state(doc.id, expected=current.value, state=target.value, actor=actor)
        self._record(
            f"document_{act.value}",
            actor=actor,
            element=doc.id,
            source_ip=source_ip,
            reason=reason,
            payload={
                "from": current.value,
                "to": target.value,
                "devices": list(doc.devices),
                "earths": list(doc.earths),
            },
        )
        return moved

    # -- earths -------------------------------------------------------------------------------------
    def apply_earth(
        self,
        node: str,
        kind: EarthKind | str,
        reference: str,
        *,
        actor: str,
        source_ip: str | None = None,
    ) -> EarthRecord:
        """Record an earth on a node: refused (:class:`ConflictError`) on a live or not isolated node."""
        earth_kind = _enum(EarthKind, kind, "earth kind")
        reference = check_text("reference", reference, max_len=200) if reference.strip() else ""
        why = earth_refusal(self.grid(), node, self._qualities())
        if why is not None:
            raise ConflictError(f"no earth on node {node}: {why}")
        earth = self.store.add_earth(node, earth_kind.value, reference, actor=actor)
        self._record(
            "earth_applied",
            actor=actor,
            element=node,
            source_ip=source_ip,
            reason=reference or None,
            payload=record_dict(earth),
        )
        return earth

    def remove_earth(self, node: str, reason: str, *, actor: str, source_ip: str | None = None) -> EarthRecord:
        """Remove the earth recorded on a node, with a reason."""
        reason = check_text("reason", reason, max_len=MAX_TEXT)
        earth = self.store.remove_earth(node)
        self._record(
            "earth_removed", actor=actor, element=node, source_ip=source_ip, reason=reason, payload=record_dict(earth)
        )
        return earth

    # -- fault flags --------------------------------------------------------------------------------
    def flag_faulted(self, node: str, reason: str, *, actor: str, source_ip: str | None = None) -> FaultRecord:
        """Flag a node (section) faulted: no close connects it until the flag is cleared."""
        reason = check_text("reason", reason, max_len=MAX_TEXT)
        self._node(self.grid(), node)
        fault = self.store.flag_faulted(node, reason, actor=actor)
        self._record(
            "fault_flagged", actor=actor, element=node, source_ip=source_ip, reason=reason, payload=record_dict(fault)
        )
        return fault

    def clear_faulted(self, node: str, reason: str, *, actor: str, source_ip: str | None = None) -> FaultRecord:
        """Clear a node's fault flag, with a reason (the route allows it to authorised users only)."""
        reason = check_text("reason", reason, max_len=MAX_TEXT)
        fault = self.store.clear_faulted(node)
        self._record(
            "fault_cleared", actor=actor, element=node, source_ip=source_ip, reason=reason, payload=record_dict(fault)
        )
        return fault


def _enum[E: enum.StrEnum](cls: type[E], value: E | str, what: str) -> E:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise InputError(f"{what} must be one of {allowed}, got {value!r}") from None

"""Switching persistence and the register: tags, safety documents and their state machine, earths, fault flags.

On the demo grid: a feeder breaker (found from the topology, not typed in) isolates part of a
feeder when open, so its nodes are dead and may be earthed; with it closed they are live and an
earth there is refused. Every change is one transaction, an event and an audit record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import feeder_breaker

from opendso.errors import ConflictError, InputError, NotFoundError, UnknownSwitchError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.switching import (
    DocumentAction,
    DocumentKind,
    DocumentState,
    EarthKind,
    SwitchingRegister,
    TagKind,
    next_document_state,
)
from opendso.operations.switching.documents import DOCUMENT_TRANSITIONS
from opendso.quality import Quality
from opendso.service.audit import AuditTrail
from opendso.store import Historian
from opendso.store.switching import SwitchingStore
from opendso.store.switching_schema import safety_document_devices, safety_documents


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture
def historian(tmp_path: Path) -> Iterator[Historian]:
    h = Historian.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield h
    h.close()


class Field:
    """The grid as it is now: its switch states change as a test opens or closes switches."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set(self, name: str, closed: bool) -> None:
        states = self.grid.switches["closed"].copy()
        states[np.flatnonzero(self.grid.switch_names == name)[0]] = 1 if closed else 0
        self.grid = self.grid.with_switch_states(states)

    def __call__(self) -> Grid:
        return self.grid


@pytest.fixture
def field(grid: Grid) -> Field:
    return Field(grid)


@pytest.fixture
def register(historian: Historian, field: Field) -> SwitchingRegister:
    return SwitchingRegister(
        SwitchingStore(historian.engine), field, events=historian.events, audit=AuditTrail(historian.engine).append
    )


def breaker_and_dead_node(grid: Grid) -> tuple[str, str]:
    """A feeder breaker and a node that opening it leaves dead."""
    row = feeder_breaker(grid)
    closed = grid.switches["closed"].copy()
    closed[row] = 0
    dead = ~analyse_topology(grid.with_switch_states(closed)).node_energised
    node = str(grid.names_of("node")[np.flatnonzero(dead)[0]])
    return str(grid.switch_names[row]), node


def test_document_state_machine_allows_exactly_five_moves() -> None:
    allowed = {
        (DocumentState.DRAFT, DocumentAction.ISSUE): DocumentState.ISSUED,
        (DocumentState.ISSUED, DocumentAction.START): DocumentState.IN_WORK,
        (DocumentState.IN_WORK, DocumentAction.CLEAR): DocumentState.CLEARED,
        (DocumentState.DRAFT, DocumentAction.CANCEL): DocumentState.CANCELLED,
        (DocumentState.ISSUED, DocumentAction.CANCEL): DocumentState.CANCELLED,
    }
    assert dict(DOCUMENT_TRANSITIONS) == allowed
    for state in DocumentState:
        for action in DocumentAction:
            if (state, action) in allowed:
                assert next_document_state(state, action) is allowed[(state, action)]
            else:
                with pytest.raises(ConflictError, match=f"from {state.value} to "):
                    next_document_state(state, action, document="ptw-1")


def test_a_permit_goes_through_its_life_and_every_step_is_logged(
    register: SwitchingRegister, field: Field, historian: Historian
) -> None:
    breaker, node = breaker_and_dead_node(field())
    doc = register.create_document(
        DocumentKind.PERMIT_TO_WORK, devices=[breaker], earths=[node], description="cable joint", actor="eng"
    )
    assert (doc.state, doc.devices, doc.earths) == ("draft", (breaker,), (node,))
    # issuing needs the device open and the earthed node dead
    with pytest.raises(ConflictError, match=f"device {breaker} is closed"):
        register.move_document(doc.id, DocumentAction.ISSUE, actor="eng")
    field.set(breaker, False)
    assert register.move_document(doc.id, DocumentAction.ISSUE, actor="eng").state == "issued"
    state = register.state()
    assert state.documents[0].state is DocumentState.ISSUED
    assert state.earthed_nodes()[node].startswith("earth of permit_to_work")
    with pytest.raises(ConflictError, match="from issued to cleared"):
        register.move_document(doc.id, DocumentAction.CLEAR, actor="op")
    assert register.move_document(doc.id, "start", actor="op").state == "in_work"
    with pytest.raises(ConflictError, match="from in_work to cancelled"):
        register.move_document(doc.id, DocumentAction.CANCEL, actor="eng", reason="no")
    assert register.move_document(doc.id, DocumentAction.CLEAR, actor="op", reason="work done").state == "cleared"
    with pytest.raises(ConflictError, match="from cleared to issued"):
        register.move_document(doc.id, DocumentAction.ISSUE, actor="eng")
    kinds = [e.kind for e in historian.events.find(kind_prefix="switching.")]
    assert kinds == [
        "switching.document_created",
        "switching.document_issue",
        "switching.document_start",
        "switching.document_clear",
    ]
    audited = [r.action for r in AuditTrail(historian.engine).read()]
    assert audited == kinds
    cleared = historian.events.find(kind="switching.document_clear")[0]
    assert cleared.payload["from"] == "in_work"
    assert cleared.payload["to"] == "cleared"
    assert cleared.payload["reason"] == "work done"


def test_a_stale_move_is_a_conflict_naming_both_states(register: SwitchingRegister, field: Field) -> None:
    breaker, _ = breaker_and_dead_node(field())
    doc = register.create_document("sanction_for_test", devices=[breaker], earths=[], description="test", actor="e")
    store = register.store
    store.set_document_state(doc.id, expected="draft", state="cancelled", actor="other")
    with pytest.raises(ConflictError, match="is cancelled, not draft"):
        store.set_document_state(doc.id, expected="draft", state="issued", actor="e")
    with pytest.raises(NotFoundError):
        store.set_document_state("ptw-none", expected="draft", state="issued", actor="e")


def test_a_document_is_written_whole_or_not_at_all(historian: Historian) -> None:
    store = SwitchingStore(historian.engine)

    def fail_on_earths(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "INSERT INTO safety_document_earths" in statement:
            raise RuntimeError("disk gone")

    sa.event.listen(historian.engine, "before_cursor_execute", fail_on_earths)
    try:
        with pytest.raises(RuntimeError, match="disk gone"):
            store.add_document("permit_to_work", "draft", devices=["a"], earths=["n"], description="x", actor="e")
    finally:
        sa.event.remove(historian.engine, "before_cursor_execute", fail_on_earths)
    with historian.engine.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(safety_documents)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(safety_document_devices)).scalar_one() == 0


def test_unknown_elements_and_bad_text_are_refused(register: SwitchingRegister) -> None:
    with pytest.raises(UnknownSwitchError):
        register.place_tag("no such switch", TagKind.CAUTION, "x", actor="op")
    with pytest.raises(UnknownSwitchError):
        register.create_document("permit_to_work", devices=["nope"], earths=[], description="x", actor="e")
    name = str(register.grid().switch_names[0])
    with pytest.raises(NotFoundError, match="no node"):
        register.create_document("permit_to_work", devices=[name], earths=["nowhere"], description="x", actor="e")
    with pytest.raises(InputError, match="at least one isolating device"):
        register.create_document("permit_to_work", devices=[], earths=[], description="x", actor="e")
    with pytest.raises(InputError, match="tag kind"):
        register.place_tag(name, "maybe", "x", actor="op")
    with pytest.raises(InputError, match="bidirectional"):
        register.place_tag(name, TagKind.CAUTION, "line \u202e reversed", actor="op")
    with pytest.raises(InputError, match="control character"):
        register.flag_faulted(str(register.grid().names_of("node")[0]), "a\x00b", actor="op")
    with pytest.raises(NotFoundError):
        register.remove_tag("tag-none", "why", actor="op")
    assert register.store.load().tags == ()


def test_tags_are_stored_and_become_the_gates(register: SwitchingRegister, historian: Historian) -> None:
    name = str(register.grid().switch_names[1])
    tag = register.place_tag(name, TagKind.DO_NOT_OPERATE, "crew on site", actor="op", source_ip="10.0.0.7")
    state = register.state()
    assert [(t.id, t.switch, t.kind) for t in state.tags] == [(tag.id, name, TagKind.DO_NOT_OPERATE)]
    record = AuditTrail(historian.engine).read()[-1]
    assert (record.action, record.actor, record.source_ip, record.element) == (
        "switching.tag_placed",
        "op",
        "10.0.0.7",
        name,
    )
    register.remove_tag(tag.id, "crew left", actor="op")
    assert register.state().tags == ()
    assert [r.action for r in AuditTrail(historian.engine).read()][-1] == "switching.tag_removed"


def test_earths_only_on_dead_nodes(register: SwitchingRegister, field: Field) -> None:
    breaker, node = breaker_and_dead_node(field())
    with pytest.raises(ConflictError, match=f"node {node} is live"):
        register.apply_earth(node, EarthKind.PORTABLE, "set 4", actor="op")
    field.set(breaker, False)
    earth = register.apply_earth(node, EarthKind.PORTABLE, "set 4", actor="op")
    assert (earth.node, earth.kind, earth.reference) == (node, "portable", "set 4")
    with pytest.raises(ConflictError, match="earthed already"):
        register.apply_earth(node, EarthKind.EARTH_SWITCH, "", actor="op")
    assert register.state().earthed_nodes() == {node: "portable earth set 4"}
    register.remove_earth(node, "work done", actor="op")
    assert register.state().earths == ()
    with pytest.raises(NotFoundError):
        register.remove_earth(node, "again", actor="op")


def test_fault_flags_need_a_reason_to_clear(register: SwitchingRegister) -> None:
    node = str(register.grid().names_of("node")[3])
    register.flag_faulted(node, "FPI 3 saw fault current", actor="op")
    assert register.state().faulted == frozenset({node})
    with pytest.raises(ConflictError):
        register.flag_faulted(node, "again", actor="op")
    with pytest.raises(InputError, match="needs text"):
        register.clear_faulted(node, "   ", actor="eng")
    assert register.state().faulted == frozenset({node})
    register.clear_faulted(node, "cable repaired and tested", actor="eng")
    assert register.state().faulted == frozenset()
    snapshot = register.snapshot()
    assert set(snapshot) == {"tags", "documents", "earths", "faults"}


def test_an_earth_needs_an_isolation_that_can_be_trusted(register: SwitchingRegister, field: Field) -> None:
    breaker, node = breaker_and_dead_node(field())
    field.set(breaker, False)
    qualities = {str(s): Quality.GOOD for s in field().switch_names}
    register.qualities = lambda: qualities
    qualities[breaker] = Quality.SUBSTITUTED  # the open state was entered by hand, not reported by the field
    with pytest.raises(ConflictError, match=f"switch {breaker}, which isolates it, is not trustworthy"):
        register.apply_earth(node, EarthKind.PORTABLE, "set 1", actor="op")
    del qualities[breaker]
    with pytest.raises(ConflictError, match=f"switch {breaker}, which isolates it, is unknown"):
        register.apply_earth(node, EarthKind.PORTABLE, "set 1", actor="op")
    # a switch far from the section does not matter
    far = next(str(s) for s in field().switch_names if str(s).startswith("MV2.101 loop_line_switch"))
    qualities[breaker] = Quality.GOOD
    qualities[far] = Quality.INVALID
    assert register.apply_earth(node, EarthKind.PORTABLE, "set 1", actor="op").node == node


def test_migration_0006_creates_and_drops_exactly_the_switching_tables(tmp_path: Path) -> None:
    from alembic import command

    from opendso.store import switching_schema
    from opendso.store.migrate import alembic_config, upgrade

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine, "0005")
    before = set(sa.inspect(engine).get_table_names())
    upgrade(engine, "0006")
    added = set(sa.inspect(engine).get_table_names()) - before
    assert added == {getattr(switching_schema, name).name for name in switching_schema.__all__}
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
    assert set(sa.inspect(engine).get_table_names()) == before
    engine.dispose()

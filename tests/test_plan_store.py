"""Switching plans in the database: kept whole, changed by compare-and-set, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opendso.errors import ConflictError, NotFoundError
from opendso.operations.switching import PlanStep, SwitchAction, SwitchingPlan
from opendso.store import migrate
from opendso.store.engine import create_engine
from opendso.store.plans import PlanStore

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> PlanStore:
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    return PlanStore(engine)


def test_a_plan_round_trips_and_versions_guard_concurrent_changes(store: PlanStore) -> None:
    plan = SwitchingPlan.new(store.new_id(), "Cable 13 outage", "erin", (PlanStep("S13", SwitchAction.OPEN),), T0)
    record = store.add(plan.to_json(), T0)
    assert record.version == 1
    with pytest.raises(ConflictError, match="exists already"):
        store.add(plan.to_json(), T0)
    loaded = store.get(plan.id)
    assert SwitchingPlan.from_json(loaded.body) == plan
    edited = plan.edit((PlanStep("S13", SwitchAction.OPEN), PlanStep("S14", SwitchAction.CLOSE)), "erin", T0)
    second = store.replace(plan.id, loaded.version, edited.to_json(), T0 + timedelta(minutes=1))
    assert second.version == 2
    assert second.created_at == T0
    # another writer still holding version 1 cannot overwrite the edit
    with pytest.raises(ConflictError, match="changed by someone else"):
        store.replace(plan.id, loaded.version, plan.to_json(), T0 + timedelta(minutes=2))
    assert SwitchingPlan.from_json(store.get(plan.id).body) == edited
    with pytest.raises(NotFoundError, match="no switching plan SP-NONE"):
        store.get("SP-NONE")
    with pytest.raises(NotFoundError):
        store.replace("SP-NONE", 1, {**plan.to_json(), "id": "SP-NONE"}, T0)
    with pytest.raises(ConflictError, match="names plan"):
        store.replace(plan.id, 2, {**plan.to_json(), "id": "SP-OTHER"}, T0)


def test_listing_filters_by_state_and_is_bounded(store: PlanStore) -> None:
    for i in range(3):
        plan = SwitchingPlan.new(f"SP-{i}", f"plan {i}", "erin", (), T0)
        store.add(plan.to_json(), T0 + timedelta(minutes=i))
    cancelled = SwitchingPlan.from_json(store.get("SP-1").body).cancel("erin", T0, "not needed")
    store.replace("SP-1", 1, cancelled.to_json(), T0 + timedelta(minutes=9))
    assert [r.id for r in store.list()] == ["SP-1", "SP-2", "SP-0"]
    assert [r.id for r in store.list(state="draft")] == ["SP-2", "SP-0"]
    assert len(store.list(limit=0)) == 1  # at least one, at most 1000

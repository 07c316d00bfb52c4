"""The switching plan repository: plans kept whole, changed by compare-and-set, never deleted.

:class:`PlanStore` stores each plan as the JSON of
:meth:`opendso.operations.switching.plans.SwitchingPlan.to_json` (the store does not import the
operations layer: it keeps the document and copies ``id``, ``title``, ``author`` and ``state``
out of it). :meth:`PlanStore.replace` writes a new body only when the row still has the version
the caller read, so a plan changed by someone else in between raises
:class:`~opendso.errors.ConflictError` instead of being overwritten. There is no delete: a plan
and its archive stay (cancelled and aborted plans included).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from opendso.errors import ConflictError, NotFoundError
from opendso.store.plan_schema import switching_plans
from opendso.timeutil import from_epoch_us, to_epoch_us

__all__ = ["PlanRecord", "PlanStore"]


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """One stored plan: its JSON body and the version a change must name."""

    id: str
    version: int
    created_at: datetime
    updated_at: datetime
    body: Mapping[str, Any]


class PlanStore:
    """Switching plans in the database (SQLite or PostgreSQL, through ``engine``)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @staticmethod
    def new_id() -> str:
        """Return a fresh plan id (``SP-`` and 8 hex digits)."""
        return f"SP-{secrets.token_hex(4).upper()}"

    def add(self, body: Mapping[str, Any], at: datetime) -> PlanRecord:
        """Store a new plan (its ``id`` must be new); return its record at version 1."""
        us = to_epoch_us(at)
        row = _columns(body)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(switching_plans.c.id).where(switching_plans.c.id == row["id"])).first():
                raise ConflictError(f"plan {row['id']} exists already")
            conn.execute(
                switching_plans.insert().values(**row, version=1, created_us=us, updated_us=us, body=dict(body))
            )
        return PlanRecord(str(row["id"]), 1, from_epoch_us(us), from_epoch_us(us), dict(body))

    def get(self, plan_id: str) -> PlanRecord:
        """Return a plan; an unknown id raises :class:`~opendso.errors.NotFoundError`."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(switching_plans).where(switching_plans.c.id == plan_id)).first()
        if row is None:
            raise NotFoundError(f"no switching plan {plan_id}")
        return _record(row)

    def list(self, *, state: str | None = None, limit: int = 100) -> list[PlanRecord]:
        """Return plans, the most recently changed first (``limit`` at most 1000)."""
        query = sa.select(switching_plans).order_by(switching_plans.c.updated_us.desc(), switching_plans.c.id)
        if state is not None:
            query = query.where(switching_plans.c.state == state)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(max(1, min(int(limit), 1000)))).all()
        return [_record(r) for r in rows]

    def replace(self, plan_id: str, version: int, body: Mapping[str, Any], at: datetime) -> PlanRecord:
        """Write ``body`` over the plan if it is still at ``version``; return the new record."""
        row = _columns(body)
        if row["id"] != plan_id:
            raise ConflictError(f"plan {plan_id}: the new body names plan {row['id']}")
        us = to_epoch_us(at)
        with self.engine.begin() as conn:
            done = conn.execute(
                switching_plans.update()
                .where(switching_plans.c.id == plan_id, switching_plans.c.version == version)
                .values(title=row["title"], state=row["state"], version=version + 1, updated_us=us, body=dict(body))
            )
            if done.rowcount != 1:
                exists = conn.execute(
                    sa.select(switching_plans.c.version).where(switching_plans.c.id == plan_id)
                ).first()
                if exists is None:
                    raise NotFoundError(f"no switching plan {plan_id}")
                raise ConflictError(
                    f"plan {plan_id} was changed by someone else (version {exists[0]}, not {version}): reload it"
                )
            created = conn.execute(
                sa.select(switching_plans.c.created_us).where(switching_plans.c.id == plan_id)
            ).scalar_one()
        return PlanRecord(plan_id, version + 1, from_epoch_us(int(created)), from_epoch_us(us), dict(body))


def _columns(body: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {
            "id": str(body["id"]),
            "title": str(body["title"])[:200],
            "author": str(body["author"]),
            "state": str(body["state"]),
        }
    except KeyError as exc:
        raise ConflictError(f"a plan body lacks {exc.args[0]!r}") from exc


def _record(row: Any) -> PlanRecord:
    return PlanRecord(
        id=str(row.id),
        version=int(row.version),
        created_at=from_epoch_us(int(row.created_us)),
        updated_at=from_epoch_us(int(row.updated_us)),
        body=dict(row.body),
    )

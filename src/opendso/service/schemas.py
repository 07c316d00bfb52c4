"""Request and response bodies of the control-room API (Pydantic), one Base/Create/Public family per entity.

Times are ISO 8601 UTC strings in responses; ids are the grid's integer ids. Maps keyed by
element id (``u_pu``, ``loading``, ...) have the id as a string key, as JSON requires.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    """Request bodies: unknown fields are refused, strings are not coerced to numbers and back."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# -- errors -------------------------------------------------------------------------------------------
class ErrorPublic(BaseModel):
    """Every error response: a message saying what and where (``errors`` lists validation findings)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


# -- authentication -----------------------------------------------------------------------------------
class Credentials(_Strict):
    """User name and password."""

    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class SessionPublic(BaseModel):
    """The logged-in user, their roles and the CSRF token to send in ``X-CSRF-Token``."""

    user: str
    roles: list[str]
    csrf_token: str | None
    password_change_required: bool = False  # then only POST /api/auth/password and logout are allowed


class PasswordChange(_Strict):
    """Change one's own password: the current one and the new one."""

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class TokenPublic(BaseModel):
    """An OAuth2-style bearer token for API clients."""

    access_token: str
    token_type: str = "bearer"
    expires: AwareDatetime


# -- grid ---------------------------------------------------------------------------------------------
class NodePublic(BaseModel):
    """A node with drawing coordinates (lon/lat when geographic, else schematic)."""

    id: int
    name: str
    x: float
    y: float
    u_rated_kv: float
    feeder: int


class BranchPublic(BaseModel):
    """A two-terminal branch (line, cable, link, transformer, ...)."""

    id: int
    name: str
    kind: str
    from_node: int
    to_node: int


class SwitchPublic(BaseModel):
    """A switch on a branch end (``element``) at ``node``."""

    id: int
    name: str
    node: int
    element: int
    closed: bool


class GridPublic(BaseModel):
    """The grid for drawing."""

    name: str
    geographic: bool
    nodes: list[NodePublic]
    branches: list[BranchPublic]
    switches: list[SwitchPublic]


class ElementPublic(BaseModel):
    """One element: its input fields, extra columns and the points that measure it."""

    id: int
    component: str
    name: str
    kind: str
    fields: dict[str, Any]
    points: list[str]


class StatePublic(BaseModel):
    """The latest estimated state."""

    time: str | None
    observable: bool
    converged: bool
    cycle_ms: float | None
    u_pu: dict[str, float | None]
    energised: dict[str, bool]
    loading: dict[str, float | None]
    switches: dict[str, bool]


# -- measurements -------------------------------------------------------------------------------------
class MeasurementPublic(BaseModel):
    """One stored measurement."""

    ts: str
    value: float | None
    quality: int


class AggregatePublic(BaseModel):
    """Min, max, mean and count of one interval."""

    ts: str
    min: float | None
    max: float | None
    mean: float | None
    count: int


# -- alarms -------------------------------------------------------------------------------------------
class AlarmPublic(BaseModel):
    """An alarm in the alarm list."""

    key: str
    monitor: str
    channel: str
    condition: str
    severity: int
    priority: str
    value: float | None
    group: str | None
    since: str
    acknowledged: bool
    shelved_until: str | None


class ShelveCreate(_Strict):
    """Shelve an alarm until a time (with a time zone), with a reason."""

    until: AwareDatetime
    reason: str = Field(min_length=1, max_length=1000)


class AlarmEventPublic(BaseModel):
    """An alarm transition (raised, acknowledged, shelved, ...)."""

    time: str
    transition: str
    key: str
    monitor: str
    channel: str
    condition: str
    severity: int
    priority: str
    value: float | None
    group: str | None
    shelved: bool
    suppressed: bool
    actor: str | None
    reason: str | None


# -- events and shift log -----------------------------------------------------------------------------
class EventPublic(BaseModel):
    """One entry of the event log."""

    seq: int
    ts: str
    actor: str
    kind: str
    element: str | None
    payload: dict[str, Any]


class ShiftNoteCreate(_Strict):
    """An operator note for the shift handover."""

    text: str = Field(min_length=1, max_length=10_000)


# -- status -------------------------------------------------------------------------------------------
class TelemetryStatus(BaseModel):
    """Telemetry health: points configured, latest readings good and bad."""

    points: int
    good: int
    bad: int


class AlarmCounts(BaseModel):
    """Active (not shelved) and unacknowledged alarms."""

    active: int
    unacknowledged: int


class StatusPublic(BaseModel):
    """What the status bar shows."""

    time: str
    simulated_time: str | None
    cycle_ms: float | None
    observable: bool
    telemetry: TelemetryStatus
    alarms: AlarmCounts


# -- audit --------------------------------------------------------------------------------------------
class AuditRecordPublic(BaseModel):
    """One record of the audit trail with its chain hashes."""

    seq: int
    ts: str
    actor: str
    source_ip: str | None
    action: str
    element: str | None
    result: str
    reason: str | None
    details: dict[str, Any]
    hash: str
    prev_hash: str

"""Request and response bodies of the control-room API (Pydantic), one Base/Create/Public family per entity.

Times are ISO 8601 UTC strings in responses; ids are the grid's integer ids. Maps keyed by
element id (``u_pu``, ``loading``, ...) have the id as a string key, as JSON requires.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


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


class DiagramViewRef(BaseModel):
    """The view a single-line diagram shows: ``kind`` ``substation`` or ``feeder``, its id and name."""

    kind: str
    id: int
    name: str


class DiagramBarPublic(BaseModel):
    """A busbar section: a horizontal bar from ``x0`` to ``x1`` on row ``y`` (diagram units)."""

    id: int
    name: str
    x0: float
    x1: float
    y: float
    u_rated_kv: float


class DiagramBandPublic(BaseModel):
    """The columns ``x0`` to ``x1`` a feeder takes in a substation's diagram."""

    feeder: int
    name: str
    x0: float
    x1: float


class DiagramTargetPublic(BaseModel):
    """The view a terminal leads to."""

    kind: str
    id: int


class DiagramNodePublic(BaseModel):
    """A node at (``x``, ``y``), or a terminal standing for a node of another view (``target``)."""

    id: int
    name: str
    x: float
    y: float
    u_rated_kv: float
    weight: int
    terminal: bool
    band: int
    target: DiagramTargetPublic | None = None


class DiagramBranchPublic(BaseModel):
    """A branch as an orthogonal polyline; ``role`` tree, terminal, loop, bay, incoming or coupler."""

    id: int
    name: str
    kind: str
    component: str
    from_node: int
    to_node: int
    role: str
    points: list[list[float]]


class DiagramSwitchPublic(BaseModel):
    """A switch on its branch end: ``symbol`` breaker, load_break, disconnector or switch; live ``closed``."""

    id: int
    name: str
    kind: str
    symbol: str
    closed: bool
    normally_open: bool
    branch: int
    node: int
    x: float
    y: float


class DiagramSourcePublic(BaseModel):
    """A source (external grid) feeding a bar from above."""

    id: int
    name: str
    x: float
    y: float
    points: list[list[float]]


class DiagramPublic(BaseModel):
    """The single-line diagram of one substation or feeder (``bounds``: x0, y0, x1, y1; y grows downwards)."""

    grid: str
    view: DiagramViewRef
    bars: list[DiagramBarPublic]
    bands: list[DiagramBandPublic]
    nodes: list[DiagramNodePublic]
    branches: list[DiagramBranchPublic]
    switches: list[DiagramSwitchPublic]
    sources: list[DiagramSourcePublic]
    bounds: list[float]


class DiagramSubstationPublic(BaseModel):
    """A substation in the diagram's view list, with the ids of its feeders."""

    id: int
    name: str
    kind: str
    feeders: list[int]


class DiagramFeederPublic(BaseModel):
    """A feeder in the diagram's view list."""

    id: int
    name: str
    substation: int


class DiagramCataloguePublic(BaseModel):
    """The diagram's views and its search index.

    Index rows: ``[name, kind, id, id to centre on, "substation:<id>" or "feeder:<id>"]``.
    """

    name: str
    substations: list[DiagramSubstationPublic]
    feeders: list[DiagramFeederPublic]
    index: list[list[Any]]


class PointInfoPublic(BaseModel):
    """What a point measures: its quantity (``u``, ``p``, ``q``, ``i``, ``switch`` ...) and unit (SI)."""

    quantity: str
    unit: str


class ElementPublic(BaseModel):
    """One element: its input fields, extra columns and the points that measure it."""

    id: int
    component: str
    name: str
    kind: str
    fields: dict[str, Any]
    points: list[str]
    point_info: dict[str, PointInfoPublic] = {}


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
    """An alarm in the alarm list, in its ISA-18.2 state, with who shelved it or took it out of service and why."""

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
    state: str = "normal"  # unacknowledged, acknowledged, returned_unacknowledged, shelved, suppressed, out_of_service
    chattering: bool = False
    cause: str | None = None  # the key of the alarm that explains this one (it heads the group)
    shelved_at: str | None = None
    shelved_by: str | None = None
    shelve_reason: str | None = None
    out_of_service: bool = False
    out_of_service_since: str | None = None
    out_of_service_by: str | None = None
    out_of_service_reason: str | None = None
    suppressed: bool = False  # suppressed by design
    suppressed_reason: str | None = None


class ShelveCreate(_Strict):
    """Shelve an alarm that is active or unacknowledged, with a reason, until a time (with a time zone) or for a
    duration in seconds (one of the two); a shelf lasts at most 8 hours unless the cycle is set otherwise."""

    until: AwareDatetime | None = None
    duration_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    reason: str = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_end(self) -> ShelveCreate:
        if (self.until is None) == (self.duration_s is None):
            raise ValueError("give either 'until' or 'duration_s'")
        return self


class ReasonCreate(_Strict):
    """A reason (required): taking an alarm out of service, suppressing an area."""

    reason: str = Field(min_length=1, max_length=1000)


class OptionalReason(_Strict):
    """An optional reason: unshelving, returning to service."""

    reason: str | None = Field(default=None, min_length=1, max_length=1000)


class AcknowledgeMany(_Strict):
    """Acknowledge the alarms named (those the operator sees on screen)."""

    keys: list[str] = Field(min_length=1, max_length=1000)


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
    out_of_service: bool = False
    cause: str | None = None


class AcknowledgedPublic(BaseModel):
    """What acknowledging several alarms did: the acknowledgements, and the alarms skipped (already acknowledged)."""

    acknowledged: list[AlarmEventPublic]
    skipped: list[str]


class AlarmAreaPublic(BaseModel):
    """An alarm area (group, e.g. a feeder) and its designed suppression, if any."""

    area: str
    suppressed: bool
    reason: str | None = None
    actor: str | None = None
    since: str | None = None


class AlarmJournalPublic(BaseModel):
    """One entry of the alarm history (from the event log)."""

    seq: int
    ts: str
    actor: str
    kind: str
    transition: str
    key: str | None
    condition: str | None
    priority: str | None
    severity: int | None
    value: float | None
    group: str | None
    cause: str | None
    reason: str | None
    shelved: bool
    suppressed: bool
    out_of_service: bool
    announced: bool


class PerTenMinutesPublic(BaseModel):
    """Annunciated alarms per operator position per 10 minutes, with the ISA-18.2 / EEMUA 191 targets."""

    average_per_position: float
    max_per_position: float
    target: float
    max_manageable: float


class FloodPeriodPublic(BaseModel):
    """Adjacent 10-minute periods with more than 10 annunciated alarms."""

    start: str
    end: str
    alarms: int
    peak_per_10_min: int


class FloodsPublic(BaseModel):
    """Alarm floods (ISA-18.2: more than 10 alarms in 10 minutes)."""

    threshold: int
    periods: list[FloodPeriodPublic]
    flood_10_min_periods: int
    total_10_min_periods: int
    percent_of_time: float


class FrequentAlarmPublic(BaseModel):
    """One of the most frequent alarms: how often it was annunciated and its share of all annunciations."""

    key: str
    count: int
    percent: float


class StaleAlarmPublic(BaseModel):
    """An alarm standing for more than 24 hours."""

    key: str
    since: str
    hours: float


class ChatteringAlarmPublic(BaseModel):
    """An alarm that chattered in the window, and how many times."""

    key: str
    episodes: int


class AlarmSummaryPublic(BaseModel):
    """The ISA-18.2 alarm performance figures of a window, and the present counts."""

    from_: str = Field(alias="from")
    to: str
    positions: int
    annunciated: int
    per_10_min: PerTenMinutesPublic
    floods: FloodsPublic
    top_ten: list[FrequentAlarmPublic]
    top_ten_percent: float
    stale: list[StaleAlarmPublic]
    chattering: list[ChatteringAlarmPublic]
    priority_distribution: dict[str, int]
    counts: AlarmCounts

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


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
    """The alarm counts, one definition everywhere (see :class:`opendso.operations.alarms.AlarmCounts`).

    ``standing``: active + returned-to-normal unacknowledged; ``unacknowledged``: active
    unacknowledged + returned unacknowledged; shelved, out-of-service and suppressed-by-design
    alarms are counted separately.
    """

    standing: int
    unacknowledged: int
    shelved: int
    out_of_service: int
    suppressed: int


class TimeAnchorPublic(BaseModel):
    """From ``wall`` on, the simulated clock reads ``simulated + (t - wall) * speed`` (speed 0: paused)."""

    wall: str
    simulated: str
    speed: float


class TimeBasePublic(BaseModel):
    """The field simulator's clock: speed, paused, and the anchors mapping wall-clock to simulated time."""

    speed: float
    paused: bool
    anchors: list[TimeAnchorPublic]


class StatusPublic(BaseModel):
    """What the status bar shows."""

    time: str
    simulated_time: str | None
    time_base: TimeBasePublic | None = None  # None without a field simulator: screens show the wall clock
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
    verified: bool | None = None  # the record matches its own (keyed) hash


class ChainProblemPublic(BaseModel):
    """One finding of an integrity check: where, what kind, and what is wrong."""

    seq: int
    kind: str
    message: str


class ChainPublic(BaseModel):
    """The check of one chain (``audit`` or ``events``)."""

    ok: bool
    records: int
    last_seq: int
    head_hash: str
    unkeyed: int
    problems: list[ChainProblemPublic]


class RowProblemPublic(BaseModel):
    """A sealed row changed outside OpenDSO."""

    table: str
    key: str
    message: str


class IntegrityPublic(BaseModel):
    """What ``opendso audit verify`` and ``GET /api/audit/verify`` report."""

    ok: bool
    database: str
    audit: ChainPublic
    events: ChainPublic
    rows: list[RowProblemPublic]


# -- users --------------------------------------------------------------------------------------------
class LoginThrottlePublic(BaseModel):
    """Failed logins of a user from one address, and until when that address must wait."""

    username: str
    source_ip: str
    failures: int
    blocked_until: str | None


class UserPublic(BaseModel):
    """A user as a security administrator sees it (never the password hash)."""

    username: str
    roles: list[str]
    disabled: bool
    password_change_required: bool
    intact: bool  # the row matches its seal
    throttles: list[LoginThrottlePublic]


class UserCreate(_Strict):
    """A new user: name, password (temporary by default: replaced at the first login) and roles."""

    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)
    roles: list[str] = Field(min_length=1, max_length=10)
    temporary: bool = True


class PasswordReset(_Strict):
    """A password an administrator sets (temporary by default)."""

    password: str = Field(min_length=1, max_length=1024)
    temporary: bool = True


class RolesUpdate(_Strict):
    """The roles a user gets (replacing the old ones)."""

    roles: list[str] = Field(min_length=1, max_length=10)


# -- switching ------------------------------------------------------------------------------------------
class OverrideBody(_Strict):
    """The override of a caution tag, with the reason (audited)."""

    tag: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=1000)


class ConfirmationBody(_Strict):
    """The confirmation of what a gate rule asked to confirm (e.g. ``limits``), with the reason (audited)."""

    rule: str = Field(min_length=1, max_length=40)
    reason: str = Field(min_length=1, max_length=1000)


class SwitchingBody(_Strict):
    """Open or close one switch: overrides of caution tags, confirmations, the second person's name."""

    switch: str = Field(min_length=1, max_length=200)
    action: str = Field(pattern="^(open|close)$")
    overrides: list[OverrideBody] = Field(default_factory=list, max_length=20)
    confirmations: list[ConfirmationBody] = Field(default_factory=list, max_length=20)
    approver: str | None = Field(default=None, min_length=1, max_length=100)


class GateDecisionPublic(BaseModel):
    """The safety gate's answer: allowed, or the one rule that refused and why."""

    switch: str
    action: str
    allowed: bool
    rule: str | None
    reason: str
    confirm: list[str]
    overrides: list[dict[str, str]]
    confirmations: list[dict[str, str]]
    passed: list[str]


class SwitchingOutcomePublic(BaseModel):
    """What came of a switching request: the decision, the command's result, the telemetry check."""

    switch: str
    action: str
    actor: str
    approver: str | None
    path: str
    status: str
    decision: GateDecisionPublic
    result: dict[str, Any] | None
    telemetry: dict[str, Any]
    requested_at: str
    finished_at: str
    event_seq: int | None
    source_ip: str | None


class TagCreate(_Strict):
    """A tag on a switch: ``do_not_operate`` or ``caution``, with its text (why)."""

    switch: str = Field(min_length=1, max_length=200)
    kind: str = Field(pattern="^(do_not_operate|caution)$")
    text: str = Field(min_length=1, max_length=1000)


class DocumentCreate(_Strict):
    """A safety document (``permit_to_work`` or ``sanction_for_test``) in draft: its devices and earths."""

    kind: str = Field(pattern="^(permit_to_work|sanction_for_test)$")
    devices: list[str] = Field(min_length=1, max_length=100)
    earths: list[str] = Field(default_factory=list, max_length=100)
    description: str = Field(min_length=1, max_length=1000)


class EarthCreate(_Strict):
    """An earth on a node: a closed earth switch or portable earths, with a reference (e.g. the set's number)."""

    node: str = Field(min_length=1, max_length=200)
    kind: str = Field(default="portable", pattern="^(earth_switch|portable)$")
    reference: str = Field(default="", max_length=200)


class FaultCreate(_Strict):
    """A node (section) flagged faulted, with the reason."""

    node: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=1000)


class SwitchingStatePublic(BaseModel):
    """Tags, safety documents, earths and fault flags as stored."""

    tags: list[dict[str, Any]]
    documents: list[dict[str, Any]]
    earths: list[dict[str, Any]]
    faults: list[dict[str, Any]]


# -- outages ------------------------------------------------------------------------------------------
class OutageStepPublic(BaseModel):
    """A restoration step: ``customers`` back at ``end``, off since ``start`` (``nodes`` restored, when known)."""

    seq: int
    start: str
    end: str
    customers: int
    feeder: str | None
    nodes: list[str]
    actor: str


class OutagePublic(BaseModel):
    """An outage: where it stands, what it interrupted, its steps, crew and estimated restoration time."""

    id: int
    source: str
    state: str
    external_id: str | None
    device: str | None
    feeder: str | None
    cause: str | None
    start: str
    end: str | None
    etr: str | None
    crew: str | None
    crew_assigned: str | None
    customers: int
    customers_off: int
    loads_known: bool
    nodes: list[str]
    steps: list[OutageStepPublic]
    loads: list[dict[str, Any]] | None = None
    calls: list[dict[str, Any]] | None = None


class OutageCallCreate(_Strict):
    """A customer call: the load or the node (one of the two), when (default: now), and what was said."""

    load: str | None = Field(default=None, min_length=1, max_length=200)
    node: str | None = Field(default=None, min_length=1, max_length=200)
    time: AwareDatetime | None = None
    text: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _one_place(self) -> OutageCallCreate:
        if (self.load is None) == (self.node is None):
            raise ValueError("give either 'load' or 'node'")
        return self


class OutageCallPublic(BaseModel):
    """The call as logged and the outage it joined."""

    call: dict[str, Any]
    outage: OutagePublic


class OutageStepCreate(_Strict):
    """A restoration step at ``time`` (default: now): the nodes restored, or the customers when loads are unknown."""

    time: AwareDatetime | None = None
    nodes: list[str] = Field(default_factory=list, max_length=10_000)
    customers: int | None = Field(default=None, ge=0, le=10**9)


class OutageCrewCreate(_Strict):
    """The crew sent to an outage (one line) and when (default: now)."""

    crew: str = Field(min_length=1, max_length=200)
    time: AwareDatetime | None = None


class OutageEtrCreate(_Strict):
    """The estimated restoration time."""

    etr: AwareDatetime


class OutageCloseCreate(_Strict):
    """Close an outage at ``time`` (default: now): everyone still off is restored; ``cause`` when known."""

    time: AwareDatetime | None = None
    cause: str | None = Field(default=None, min_length=1, max_length=2000)


class ReliabilityPublic(BaseModel):
    """IEEE 1366 indices of the stored outages (the ``opendso reliability --json`` keys, CAIFI/CTAIDI when known)."""

    model_config = ConfigDict(extra="allow")

    saidi_min: float
    saifi: float
    caidi_min: float | None
    asai: float
    maifi_e: float
    customer_minutes: float
    ens_mwh: float | None
    t_med_min: float | None
    major_event_days: list[str]
    without_med: dict[str, float | None]
    customers_served: int


# -- switching plans and FLISR (routes/plans.py, routes/flisr.py) -------------------------------------------------
class PlanStepBody(_Strict):
    """One step of a switching plan: open or close a switch, remotely or by a field crew."""

    switch: str = Field(min_length=1, max_length=200)
    action: str = Field(pattern="^(open|close)$")
    kind: str = Field(default="remote", pattern="^(remote|manual)$")
    instruction: str = Field(default="", max_length=1000)
    overrides: list[OverrideBody] = Field(default_factory=list, max_length=20)
    confirmations: list[ConfirmationBody] = Field(default_factory=list, max_length=20)


class PlanCreate(_Strict):
    """A new switching plan (a draft): a title and its ordered steps."""

    title: str = Field(min_length=1, max_length=200)
    steps: list[PlanStepBody] = Field(default_factory=list, max_length=500)


class PlanEdit(_Strict):
    """The steps of a draft replaced, with the version the editor read."""

    version: int = Field(ge=1)
    steps: list[PlanStepBody] = Field(max_length=500)


class PlanVersion(_Strict):
    """A plan transition, with the version the caller read (a concurrent change is 409)."""

    version: int = Field(ge=1)


class PlanReason(_Strict):
    """A plan transition that needs a reason (cancel, abort)."""

    version: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=1000)


class PlanManualConfirm(_Strict):
    """A field crew's manual step reported done, with what they said."""

    version: int = Field(ge=1)
    note: str = Field(default="", max_length=1000)


class FlisrReject(_Strict):
    """An operator's rejection of a FLISR proposal."""

    reason: str = Field(min_length=1, max_length=1000)


class FlisrStudy(_Strict):
    """A FLISR study: the node where a fault is supposed."""

    fault: str = Field(min_length=1, max_length=200)


class ApprovalCreate(_Strict):
    """A second person's approval of one open or close of one switch."""

    switch: str = Field(min_length=1, max_length=200)
    action: str = Field(pattern="^(open|close)$")


# -- DER registry ---------------------------------------------------------------------------------------
class DerControlBody(_Strict):
    """How the DSO reaches a DER asset's controller."""

    protocol: str = Field(default="none", pattern="^(modbus|iec104|mqtt|openadr|none)$")
    address: str = Field(default="", max_length=200)


class DerAgreementBody(_Strict):
    """A connection agreement: firm, or flexible with a principle of access, a curtailment cap and an export limit."""

    kind: str = Field(default="firm", pattern="^(firm|flexible)$")
    principle: str | None = Field(default=None, pattern="^(lifo|pro_rata|technical_best)$")
    curtailment_cap_pct: float | None = Field(default=None, ge=0, le=100)
    export_limit_kw: float | None = Field(default=None, ge=0, le=1e7)


class DerAssetBody(_Strict):
    """A DER asset (its id is new on create and the same on update); the model checks the rest."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(pattern="^(pv|wind|battery|ev_hub|heat_pumps|flexible_load)$")
    node: str = Field(min_length=1, max_length=200)
    owner: str = Field(min_length=1, max_length=200)
    aggregator: str = Field(default="", max_length=200)
    export_kw: float = Field(default=0.0, ge=0, le=1e7)
    import_kw: float = Field(default=0.0, ge=0, le=1e7)
    storage_kwh: float = Field(default=0.0, ge=0, le=1e7)
    control: DerControlBody = Field(default_factory=DerControlBody)
    agreement: DerAgreementBody = Field(default_factory=DerAgreementBody)


class DerAssetUpdate(_Strict):
    """An asset's data replaced, with the version the editor read."""

    version: int = Field(ge=1)
    asset: DerAssetBody


class DerRequestCreate(_Strict):
    """A connection request received for a registered asset (``received_at`` defaults to now)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    asset_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    received_at: AwareDatetime | None = None


class DerRequestMove(_Strict):
    """A connection request moved along its state machine, with the version the caller read."""

    version: int = Field(ge=1)
    to: str = Field(pattern="^(studied|offered|accepted|connected|withdrawn|rejected)$")
    note: str = Field(default="", max_length=1000)

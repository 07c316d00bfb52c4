"""Active network management: flexible DER held within the network's limits, cycle by cycle.

:class:`AnmController` subscribes to the real-time cycle (like FLISR's
:class:`~opendso.operations.fault_response.FaultResponder`) and works on the *estimated* state:

**Trigger.** A branch whose loading (as power-grid-model reports it: power-based for
transformers) reaches ``trigger_loading`` (1.0 by default; a lower trigger per element in
``element_triggers``), or an energised node whose voltage reaches ``u_trigger_pu``, becomes an
active *constraint*.

**Curtailment.** While a constraint is at or above its trigger, the relief needed is
``value - target`` (``target_loading``, ``u_target_pu``: below the trigger, above the release
threshold, so one action does not land on either). Each flexible DER's sensitivity (relief per W
less export, :func:`~opendso.der.anm_sensitivity.export_sensitivities`, one batch power flow of
power-grid-model around the estimate) says who is *behind* the constraint: a positive
sensitivity of at least ``behind_share`` of the largest. Those DER are grouped in the order their
principle of access sets (:func:`curtailment_groups`: last-in-first-off, the newest first, one at
a time; pro-rata, all together by the same share of their output; technical best, the most
sensitive first); principles mixed behind one constraint are taken in ``principle_order``. The
relief is taken group by group (:func:`allocate_curtailment`): a group gives up to all its
output before the next is touched. A DER's new limit is its present output less its share,
never above a limit already held; the limit each constraint asks for is kept, and a DER's limit
is the lowest any constraint asks.

**Release with hysteresis.** A constraint at or below ``release_loading`` (``u_release_pu``) for
``release_cycles`` cycles in a row gives back one step: the DER curtailed last first (the reverse
of the curtailment order, so under last-in-first-off the most senior DER gets its export back
first), each by at most ``release_step`` of its rating, and only as far as the predicted value
(sensitivity x the rise the DER can make: its available power less its output when it reports
it, else the whole step) stays at or below the target. Then the count starts again. A limit that
reaches the DER's rating is withdrawn; a constraint with no limit left is cleared. Between the
release threshold and the trigger nothing moves: no oscillation.

**Escalation.** A constraint at or above its trigger for ``escalate_cycles`` (N) cycles in a row
after ANM first acted on it (each of them curtailing further) raises an alarm (event
``anm.escalated``, level ``alarm``); after 2N every DER behind it is held at no more than its
agreement's fail-safe export limit (level ``fail_safe``); after 3N every DER behind it that does
not follow its limit (output above the limit by more than ``follow_tolerance`` of its rating) is
tripped (level ``trip``): its connection switch (``AnmDer.trip_switch``)
opened through the switching dispatcher (path ``anm``, the safety gate decides), or, without one,
a limit of 0 W through the arbiter. Never a direct adapter call.

**Stale state, no action.** A cycle whose estimate did not converge, or is older than
``max_state_age_s`` on the controller's clock, changes nothing (the set-point gate refuses such
state independently).

Set-points go to the :class:`~opendso.operations.setpoints.arbiter.SetpointArbiter` as source
``anm`` (merged there with FLISR, operators, demand response and markets; the arbiter alone
writes the point); :meth:`AnmController.step` also refreshes the arbiter's points so no DER's
watchdog falls back while a limit holds. Every curtailed MWh is accounted per DER and per
agreement (:mod:`opendso.der.anm_accounting`). Events (kind ``anm.*``) go to the event log.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from opendso.der.anm_accounting import CurtailmentLedger, DerAccount
from opendso.der.anm_sensitivity import branch_names, export_sensitivities
from opendso.der.model import AccessPrinciple, DerAsset
from opendso.der.registry import DerRegistry
from opendso.errors import InputError, OpenDSOError
from opendso.grid.model import Grid
from opendso.measurement import Measurement
from opendso.operations.cycle import CycleResult
from opendso.operations.setpoints import SetpointArbiter, SetpointRequest, SetpointSource
from opendso.operations.switching.dispatch import CommandPath, SwitchingDispatcher
from opendso.operations.switching.model import SwitchAction, SwitchingRequest
from opendso.quality import Quality
from opendso.store.events import EventLog
from opendso.telemetry.points import PointMap

__all__ = [
    "AnmController",
    "AnmDer",
    "AnmSettings",
    "ConstraintKind",
    "ConstraintView",
    "Escalation",
    "allocate_curtailment",
    "anm_ders",
    "annual_energy_mwh",
    "curtailment_groups",
    "flexible_by_seniority",
    "flexible_generators",
]

log = logging.getLogger(__name__)

#: The quantity of a DER's export-limit point and of its available-power report.
P_LIMIT, P_AVAILABLE = "p_limit", "p_available"

FloatArray = npt.NDArray[np.float64]


class ConstraintKind(enum.StrEnum):
    """What a constraint limits: a branch's loading or a node's voltage."""

    THERMAL = "thermal"
    VOLTAGE = "voltage"


class Escalation(enum.IntEnum):
    """How far a constraint not relieved has escalated."""

    NONE = 0
    ALARM = 1
    FAIL_SAFE = 2
    TRIP = 3


@dataclass(frozen=True)
class AnmSettings:
    """Triggers, hysteresis and escalation of ANM (see the module docstring).

    Loadings are fractions of the rating (1.0 = 100 %), voltages p.u. ``element_triggers`` maps a
    branch (``line:<name>``, ``transformer:<name>``) to a trigger below ``trigger_loading``; its
    target and release threshold scale with it. ``max_gap_s`` bounds one accounting interval.
    """

    trigger_loading: float = 1.0
    target_loading: float = 0.95
    release_loading: float = 0.9
    u_trigger_pu: float = 1.10
    u_target_pu: float = 1.09
    u_release_pu: float = 1.08
    element_triggers: Mapping[str, float] = field(default_factory=dict)
    release_cycles: int = 3
    release_step: float = 0.25
    escalate_cycles: int = 5
    max_state_age_s: float = 30.0
    behind_share: float = 0.01
    sensitivity_delta_w: float = 1000.0
    follow_tolerance: float = 0.02
    principle_order: tuple[AccessPrinciple, ...] = (
        AccessPrinciple.LIFO,
        AccessPrinciple.TECHNICAL_BEST,
        AccessPrinciple.PRO_RATA,
    )
    max_gap_s: float = 60.0
    refresh_arbiter: bool = True
    actor: str = "anm"

    def __post_init__(self) -> None:
        if not 0 < self.release_loading < self.target_loading < self.trigger_loading:
            raise InputError("ANM settings: need 0 < release_loading < target_loading < trigger_loading")
        if not 0 < self.u_release_pu < self.u_target_pu < self.u_trigger_pu:
            raise InputError("ANM settings: need 0 < u_release_pu < u_target_pu < u_trigger_pu")
        for name, value in self.element_triggers.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= self.trigger_loading):
                raise InputError(
                    f"ANM settings: trigger of {name!r} must be in (0, {self.trigger_loading}], got {value!r}"
                )
        for name in ("release_cycles", "escalate_cycles"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"ANM settings: {name} must be >= 1")
        if not 0 < self.release_step <= 1:
            raise InputError("ANM settings: release_step must be in (0, 1]")
        for name in ("max_state_age_s", "sensitivity_delta_w", "max_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"ANM settings: {name} must be > 0, got {value!r}")
        if not 0 <= self.behind_share < 1 or not 0 <= self.follow_tolerance < 1:
            raise InputError("ANM settings: behind_share and follow_tolerance must be in [0, 1)")

    def thresholds(self, element: str, kind: ConstraintKind) -> tuple[float, float, float]:
        """(trigger, target, release) of one element."""
        if kind is ConstraintKind.VOLTAGE:
            return self.u_trigger_pu, self.u_target_pu, self.u_release_pu
        trigger = float(self.element_triggers.get(element, self.trigger_loading))
        scale = trigger / self.trigger_loading
        return trigger, self.target_loading * scale, self.release_loading * scale


@dataclass(frozen=True)
class AnmDer:
    """A flexible DER under ANM: the registry's asset and where it is in the grid and the point map.

    ``point``: its export-limit point (quantity ``p_limit``); ``generator``: its ``sym_gen`` in
    the grid; ``seniority``: 0 for the most senior (earliest request); ``available_point``: its
    ``p_available`` report (None: not reported); ``trip_switch``: the switch that disconnects
    it (None: a trip is a 0 W limit); ``annual_energy_mwh``: for the curtailment cap.
    """

    asset: DerAsset
    point: str
    generator: str
    seniority: int
    available_point: str | None = None
    trip_switch: str | None = None
    annual_energy_mwh: float | None = None

    @property
    def rating_w(self) -> float:
        """The asset's export capacity (W)."""
        return self.asset.export_kw * 1e3

    @property
    def principle(self) -> AccessPrinciple:
        """The principle of access of its flexible agreement."""
        assert self.asset.agreement.principle is not None
        return self.asset.agreement.principle

    @property
    def fail_safe_w(self) -> float:
        """The agreement's fail-safe export limit (W)."""
        return (self.asset.agreement.export_limit_kw or 0.0) * 1e3


def anm_ders(
    registry: DerRegistry,
    point_map: PointMap,
    grid: Grid,
    *,
    trip_switches: Mapping[str, str] | None = None,
) -> list[AnmDer]:
    """The registry's connected flexible assets that ANM can reach, most senior first.

    An asset's export-limit point is the ``p_limit`` point its control address names (the point,
    or its generator), else, without an address, the one ``p_limit`` point of a generator at its
    node. An asset whose address names no such point, with none or several at its node, or whose
    point another (more senior) asset already has, is left out and logged. Seniority is the registry's
    (:meth:`~opendso.der.registry.DerRegistry.flexible_behind`: earliest request first; assets
    without a request are the most senior). ``trip_switches``: asset id -> its switch.
    """
    limit_points = {p.name: p for p in point_map.points if p.quantity == P_LIMIT}
    available = {p.element: p.name for p in point_map.points if p.quantity == P_AVAILABLE}
    gen_names = [str(n) for n in grid.names_of("sym_gen").tolist()] if grid.count("sym_gen") else []
    gen_node = dict(zip(gen_names, grid.component("sym_gen")["node"].tolist(), strict=True)) if gen_names else {}
    node_name = {
        int(i): str(n)
        for i, n in zip(grid.component("node")["id"].tolist(), grid.names_of("node").tolist(), strict=True)
    }
    by_node: dict[str, list[str]] = {}
    for name, p in limit_points.items():
        if p.element in gen_node:
            by_node.setdefault(node_name[int(gen_node[p.element])], []).append(name)
    out: list[AnmDer] = []
    used: set[str] = set()
    for asset in flexible_by_seniority(registry):
        address = asset.control.address
        if address:  # the point it names (or its generator's), nothing else
            named = [p for p in (address, f"{address}/{P_LIMIT}") if p in limit_points]
        else:
            named = by_node.get(asset.node, [])
        if len(named) != 1 or named[0] in used:
            log.warning("event=anm_der_unreachable asset=%s address=%r candidates=%d", asset.id, address, len(named))
            continue
        point = named[0]
        used.add(point)
        generator = limit_points[point].element
        if generator not in gen_node:
            log.warning("event=anm_der_unreachable asset=%s point=%s", asset.id, point)
            continue
        out.append(
            AnmDer(
                asset,
                point,
                generator,
                len(out),
                available_point=available.get(generator),
                trip_switch=(trip_switches or {}).get(asset.id),
                annual_energy_mwh=annual_energy_mwh(grid, generator, asset.export_kw),
            )
        )
    return out


def annual_energy_mwh(grid: Grid, generator: str, export_kw: float) -> float | None:
    """An asset's annual energy for its curtailment cap: its generator's mean profile x 8,760 h, at ``export_kw``.

    The generator's mean relative output over the grid's profiles (its active power relative to
    its installed power) times the asset's export capacity times 8,760 h; None without profiles
    for the generator.
    """
    profiles = grid.profiles
    if profiles is None or not grid.count("sym_gen"):
        return None
    gen = grid.component("sym_gen")
    rows = np.flatnonzero(grid.names_of("sym_gen") == generator)
    if not rows.size:
        return None
    gen_id = int(gen["id"][rows[0]])
    for a in profiles.assignments:
        if a.component != "sym_gen" or a.attribute != "p_specified":
            continue
        k = np.flatnonzero(a.ids == gen_id)
        if not k.size or a.column[k[0]] < 0 or not a.scale[k[0]]:
            return None
        relative = float(np.mean(profiles.values[:, a.column[k[0]]]))  # the profile is relative to the scale
        return max(relative, 0.0) * export_kw * 8760.0 / 1e3
    return None


def flexible_generators(registry: DerRegistry, grid: Grid) -> dict[str, DerAsset]:
    """Generator (``sym_gen`` name) -> the connected flexible asset it is, for the field's DER points.

    The generator is the one its control address names (``<generator>/p_limit`` or the
    generator's name), else, without an address, the one generator at the asset's node; an asset
    whose address names no generator, with none or several at its node, or whose generator a
    more senior asset already has, is left out (logged).
    """
    if not grid.count("sym_gen"):
        return {}
    names = [str(n) for n in grid.names_of("sym_gen").tolist()]
    node_name = {
        int(i): str(n)
        for i, n in zip(grid.component("node")["id"].tolist(), grid.names_of("node").tolist(), strict=True)
    }
    at_node: dict[str, list[str]] = {}
    for name, node in zip(names, grid.component("sym_gen")["node"].tolist(), strict=True):
        at_node.setdefault(node_name[int(node)], []).append(name)
    out: dict[str, DerAsset] = {}
    for asset in flexible_by_seniority(registry):
        address = asset.control.address
        named = address.removesuffix(f"/{P_LIMIT}")
        candidates = ([named] if named in names else []) if address else at_node.get(asset.node, [])
        if len(candidates) != 1 or candidates[0] in out:
            log.warning("event=anm_der_unreachable asset=%s candidates=%d", asset.id, len(candidates))
            continue
        out[candidates[0]] = asset
    return out


def flexible_by_seniority(registry: DerRegistry) -> list[DerAsset]:
    """The registry's connected flexible assets, most senior first (the registry's order of seniority).

    :meth:`~opendso.der.registry.DerRegistry.flexible_behind` of every asset's node gives each
    asset's seniority (the received time of its request; assets without one first, by id).
    """
    seen: dict[str, tuple[datetime | None, DerAsset]] = {}
    for node in sorted({a.node for a, _ in registry.assets()}):
        for f in registry.flexible_behind(node):
            seen.setdefault(f.asset.id, (f.received_at, f.asset))
    epoch = datetime.min.replace(tzinfo=UTC)
    return [a for _, a in sorted(seen.values(), key=lambda t: (t[0] or epoch, t[1].id))]


def curtailment_groups(
    ders: Sequence[AnmDer], principle: AccessPrinciple, sensitivity: Mapping[str, float]
) -> list[list[AnmDer]]:
    """``ders`` of ``principle`` grouped in the order they are curtailed (the registry's rule).

    Last-in-first-off: the newest (highest seniority number) first, one per group; pro-rata: one
    group; technical best: the largest ``sensitivity`` (by asset id) first, one per group, ties
    to the newest.
    """
    of = [d for d in ders if d.principle is principle]
    if principle is AccessPrinciple.LIFO:
        return [[d] for d in sorted(of, key=lambda d: -d.seniority)]
    if principle is AccessPrinciple.PRO_RATA:
        return [of] if of else []
    return [[d] for d in sorted(of, key=lambda d: (-abs(sensitivity[d.asset.id]), -d.seniority))]


def allocate_curtailment(
    required: float, groups: Sequence[Sequence[int]], output_w: FloatArray, relief: FloatArray
) -> tuple[FloatArray, float]:
    """Share ``required`` relief over ``groups`` of DER indices, in order; return (curtailment W per DER, relief left).

    A group gives up to all its output (its relief is sum(relief x output)) before the next is
    touched; within a group every DER gives the same share of its output (pro-rata).
    """
    curtail = np.zeros(output_w.size)
    left = float(required)
    for group in groups:
        if left <= 0:
            break
        idx = np.asarray(group, dtype=np.int64)
        out = np.maximum(output_w[idx], 0.0)
        capacity = float(np.sum(relief[idx] * out))
        if capacity <= 0:
            continue
        share = min(1.0, left / capacity)
        curtail[idx] = share * out
        left -= share * capacity
    return curtail, max(left, 0.0)


@dataclass
class _Constraint:
    element: str
    kind: ConstraintKind
    index: int  # row in the branch or node arrays
    since: datetime
    value: float = math.nan
    limits: dict[str, float] = field(default_factory=dict)  # DER point -> the limit this constraint asks (W)
    rank: dict[str, int] = field(default_factory=dict)  # DER point -> the order it was curtailed in (0 first)
    behind: tuple[str, ...] = ()  # DER points behind it at the last curtailment
    acted: bool = False  # ANM has acted on it at least once
    unrelieved: int = 0  # cycles in a row at or above the trigger after ANM acted
    below: int = 0  # cycles in a row at or below the release threshold
    escalation: Escalation = Escalation.NONE
    tripped: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ConstraintView:
    """One active constraint as the API shows it."""

    element: str
    kind: ConstraintKind
    since: datetime
    value: float
    trigger: float
    release: float
    escalation: Escalation
    limits_w: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        """The constraint as JSON."""
        return {
            "element": self.element,
            "kind": self.kind.value,
            "since": self.since.isoformat(),
            "value": self.value if math.isfinite(self.value) else None,
            "trigger": self.trigger,
            "release": self.release,
            "escalation": self.escalation.name.lower(),
            "limits_w": dict(self.limits_w),
        }


@dataclass
class AnmStats:
    """What the controller has done."""

    cycles: int = 0
    stale_cycles: int = 0
    curtailments: int = 0
    releases: int = 0
    submits: int = 0
    refused: int = 0
    trips: int = 0
    decision_ms: float = 0.0


class AnmController:
    """Active network management on the real-time cycle's estimate (see the module docstring).

    ``arbiter``: where the limits go (source ``anm``); ``ders``: the flexible DER
    (:func:`anm_ders`); ``latest``: the latest values (for ``p_available``); ``dispatcher``: for
    trips by switch (default the arbiter's); ``clock``: the time the state's age is judged on
    (the cycles' clock); ``energy_time``: maps that time to the time energy is integrated over
    (in ``opendso run`` the field simulator's simulated time; default the clock's own).
    """

    def __init__(
        self,
        arbiter: SetpointArbiter,
        ders: Sequence[AnmDer],
        *,
        settings: AnmSettings | None = None,
        latest: Callable[[], Mapping[str, Measurement]] | None = None,
        dispatcher: SwitchingDispatcher | None = None,
        events: EventLog | None = None,
        clock: Callable[[], datetime] | None = None,
        energy_time: Callable[[datetime], datetime] | None = None,
    ) -> None:
        self.arbiter = arbiter
        self.energy_time: Callable[[datetime], datetime] = energy_time or (lambda t: t)
        self.ders = tuple(ders)
        points = [d.point for d in self.ders]
        if len(set(points)) != len(points):
            raise InputError("ANM: two DER share one export-limit point")
        self.settings = settings or AnmSettings()
        self.latest = latest
        self.dispatcher = dispatcher or arbiter.dispatcher
        self.events = events
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.stats = AnmStats()
        self.ledger = CurtailmentLedger(
            [
                DerAccount(
                    d.asset.id,
                    d.asset.owner,
                    d.principle.value,
                    d.asset.agreement.curtailment_cap_pct,
                    d.annual_energy_mwh,
                )
                for d in self.ders
            ],
            max_gap_s=self.settings.max_gap_s,
        )
        self._constraints: dict[str, _Constraint] = {}
        self._asked: dict[str, float | None] = {d.point: None for d in self.ders}  # what ANM last asked per point
        self._by_point = {d.point: d for d in self.ders}
        self._task: asyncio.Task[Any] | None = None
        self._pending: CycleResult | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- queries ---------------------------------------------------------------------------------------
    def limit(self, point: str) -> float | None:
        """The limit ANM asks for on ``point`` now (None: none)."""
        return self._asked.get(point)

    def constraints(self) -> list[ConstraintView]:
        """The active constraints."""
        out = []
        for c in self._constraints.values():
            trigger, _, release = self.settings.thresholds(c.element, c.kind)
            out.append(
                ConstraintView(c.element, c.kind, c.since, c.value, trigger, release, c.escalation, dict(c.limits))
            )
        return out

    def snapshot(self) -> dict[str, Any]:
        """What the API serves: constraints, the limit per DER with its owner, curtailed energy."""
        ders = []
        for d in self.ders:
            effective, owner = self.arbiter.effective(d.point)
            account = self.ledger.account(d.asset.id)
            ders.append(
                {
                    "asset": d.asset.id,
                    "name": d.asset.name,
                    "owner": d.asset.owner,
                    "node": d.asset.node,
                    "point": d.point,
                    "principle": d.principle.value,
                    "seniority": d.seniority,
                    "rating_kw": d.asset.export_kw,
                    "anm_limit_kw": None if self._asked[d.point] is None else self._asked[d.point] / 1e3,  # type: ignore[operator]
                    "limit_kw": None if effective is None else effective / 1e3,
                    "limit_owner": owner.value if owner is not None else None,
                    "curtailed_mwh": account.curtailed_mwh,
                    "account": account.to_json(),
                }
            )
        return {
            "constraints": [c.to_json() for c in self.constraints()],
            "ders": ders,
            "curtailment": self.ledger.to_json(),
            "stats": {k: getattr(self.stats, k) for k in self.stats.__dataclass_fields__},
        }

    # -- the cycle subscriber --------------------------------------------------------------------------
    def on_cycle(self, result: CycleResult) -> None:
        """Monitor subscriber: run :meth:`step` on the running loop; cycles arriving meanwhile keep only the newest."""
        if self._task is not None and not self._task.done():
            self._pending = result
            return
        self._start(result)

    def _start(self, result: CycleResult) -> None:
        task = asyncio.get_running_loop().create_task(self._run(result))
        self._task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, result: CycleResult) -> None:
        try:
            await self.step(result)
        except Exception:  # one failed step must not stop the cycle's subscribers
            log.exception("event=anm_step_failed time=%s", result.time.isoformat())
        pending, self._pending = self._pending, None
        if pending is not None:
            self._start(pending)

    async def wait_idle(self) -> None:
        """Wait until every step started so far has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- one cycle -------------------------------------------------------------------------------------
    async def step(self, result: CycleResult) -> list[str]:
        """Act on one cycle's result; return the points whose ANM limit changed."""
        now = self.clock()
        self.stats.cycles += 1
        latest = self.latest() if self.latest is not None else {}
        if not self._fresh(result, now):
            self.stats.stale_cycles += 1
            log.info("event=anm_stale_state time=%s", result.time.isoformat())
            self._account(now, latest)
            return []
        reported = [self._available(d, latest) for d in self.ders]  # read here: the latest values change
        t0 = time.perf_counter()
        trips = await asyncio.to_thread(self._decide, result, now, reported)  # power flows off the loop
        self.stats.decision_ms = (time.perf_counter() - t0) * 1e3
        changed = await self._send()
        for der, constraint in trips:
            await self._trip(der, constraint)
        if self.settings.refresh_arbiter:
            await self.arbiter.refresh(now)
        self._account(now, latest)
        return changed

    def _fresh(self, result: CycleResult, now: datetime) -> bool:
        est = result.estimation
        if not est.converged:
            return False
        return (now - result.time).total_seconds() <= self.settings.max_state_age_s

    def _available(self, der: AnmDer, latest: Mapping[str, Measurement]) -> float | None:
        if der.available_point is None:
            return None
        m = latest.get(der.available_point)
        if m is None or m.value is None or int(m.quality) != int(Quality.GOOD) or not math.isfinite(m.value):
            return None
        return float(m.value)

    def _account(self, now: datetime, latest: Mapping[str, Measurement]) -> None:
        now = self.energy_time(now)
        for d in self.ders:
            limit, owner = self.arbiter.effective(d.point)
            self.ledger.record(
                d.asset.id,
                now,
                available_w=self._available(d, latest),
                limit_w=limit,
                owner=owner.value if owner is not None else None,
            )

    def _values(self, result: CycleResult) -> tuple[tuple[str, ...], FloatArray, tuple[str, ...], FloatArray]:
        grid = result.estimation.grid
        out = result.estimation.output
        branches = branch_names(grid)
        parts = [np.asarray(out[c]["loading"], dtype=np.float64) for c in ("line", "transformer") if grid.count(c)]
        loading = np.concatenate(parts) if parts else np.zeros(0)
        nodes = tuple(str(n) for n in grid.names_of("node").tolist())
        u = np.asarray(out["node"]["u_pu"], dtype=np.float64).copy()
        u[~result.energised] = np.nan
        return branches, loading, nodes, u

    def _decide(
        self, result: CycleResult, now: datetime, reported: Sequence[float | None]
    ) -> list[tuple[AnmDer, _Constraint]]:
        s = self.settings
        if not self.ders:  # nothing ANM could curtail
            return []
        branches, loading, nodes, u = self._values(result)
        # new constraints
        for k, name in enumerate(branches):
            element = name
            trigger, _, _ = s.thresholds(element, ConstraintKind.THERMAL)
            if element not in self._constraints and np.isfinite(loading[k]) and loading[k] >= trigger:
                self._activate(_Constraint(element, ConstraintKind.THERMAL, k, now), loading[k])
        for k, name in enumerate(nodes):
            element = f"node:{name}"
            if element not in self._constraints and np.isfinite(u[k]) and u[k] >= s.u_trigger_pu:
                self._activate(_Constraint(element, ConstraintKind.VOLTAGE, k, now), u[k])
        if not self._constraints:
            return []
        est = result.estimation
        gen_out = est.output.get("sym_gen")
        gen_rows = (
            {str(n): k for k, n in enumerate(est.grid.names_of("sym_gen").tolist())}
            if est.grid.count("sym_gen")
            else {}
        )
        output = np.array(
            [
                float(gen_out["p"][gen_rows[d.generator]])
                if gen_out is not None and d.generator in gen_rows
                else math.nan
                for d in self.ders
            ]
        )
        available = np.array([math.nan if a is None else a for a in reported])
        sens = export_sensitivities(
            est.grid, [d.generator for d in self.ders], output=est.output, delta_w=s.sensitivity_delta_w
        )
        trips: list[tuple[AnmDer, _Constraint]] = []
        for c in list(self._constraints.values()):
            value = float(loading[c.index] if c.kind is ConstraintKind.THERMAL else u[c.index])
            c.value = value
            relief = sens.loading[:, c.index] if c.kind is ConstraintKind.THERMAL else sens.u_pu[:, c.index]
            trigger, target, release = s.thresholds(c.element, c.kind)
            if not math.isfinite(value):  # de-energised: nothing flows, nothing to relieve; release at once
                c.below = s.release_cycles
                value = 0.0
            if value >= trigger:
                c.below = 0
                if c.acted:  # a cycle after ANM acted on it, still not relieved
                    c.unrelieved += 1
                    self._escalate(c, output, trips)
                self._curtail(c, value - target, output, relief)
                c.acted = True
            elif value <= release:
                c.below += 1
                c.unrelieved = 0
                c.escalation = Escalation.NONE
                if c.below >= s.release_cycles:
                    c.below = 0
                    self._release(c, target - value, output, available, relief)
            else:
                c.below = 0
                c.unrelieved = 0
                c.escalation = Escalation.NONE
            if not c.limits and value < trigger:
                del self._constraints[c.element]
                self._event("anm.cleared", c.element, {"value": value})
        return trips

    def _activate(self, c: _Constraint, value: float) -> None:
        c.value = float(value)
        self._constraints[c.element] = c
        self._event("anm.constraint", c.element, {"kind": c.kind.value, "value": float(value)})

    def _curtail(self, c: _Constraint, required: float, output: FloatArray, relief: FloatArray) -> None:
        s = self.settings
        ok = np.isfinite(output) & (relief > 0)
        if not ok.any():
            log.warning("event=anm_nothing_behind element=%s", c.element)
            return
        top = float(relief[ok].max())
        behind = [k for k in range(len(self.ders)) if ok[k] and relief[k] >= s.behind_share * top]
        by_id = {self.ders[k].asset.id: float(relief[k]) for k in behind}
        index = {self.ders[k].point: k for k in behind}
        groups: list[list[int]] = []
        for principle in s.principle_order:
            for g in curtailment_groups([self.ders[k] for k in behind], principle, by_id):
                groups.append([index[d.point] for d in g])
        c.behind = tuple(self.ders[k].point for k in behind)
        curtail, left = allocate_curtailment(required, groups, np.nan_to_num(output), relief)
        changed: dict[str, float] = {}
        next_rank = max(c.rank.values(), default=-1) + 1
        for rank, group in enumerate(groups):
            for k in group:
                if curtail[k] <= 0:
                    continue
                d = self.ders[k]
                limit = max(0.0, float(output[k]) - float(curtail[k]))
                if d.point in c.limits:
                    limit = min(limit, c.limits[d.point])
                else:
                    c.rank[d.point] = next_rank + rank
                c.limits[d.point] = limit
                changed[d.asset.id] = limit
        if changed:
            self.stats.curtailments += 1
            self._event(
                "anm.curtail",
                c.element,
                {"value": c.value, "required": required, "unresolved": left, "limits_w": changed},
            )

    def _release(
        self, c: _Constraint, room: float, output: FloatArray, available: FloatArray, relief: FloatArray
    ) -> None:
        if not c.limits:
            return
        top = max(c.rank[p] for p in c.limits)
        group = [p for p in c.limits if c.rank[p] == top]
        released: dict[str, float | None] = {}
        for point in group:
            d = self._by_point[point]
            k = self.ders.index(d)
            step = self.settings.release_step * d.rating_w
            known = math.isfinite(available[k]) and math.isfinite(output[k])
            headroom = max(float(available[k] - output[k]), 0.0) if known else step
            rise = float(relief[k]) * min(step, headroom)  # what the constraint would see
            if rise > room:  # only as far as the room allows
                if relief[k] <= 0 or room <= 0:
                    continue
                step = room / float(relief[k])
                if step < 0.01 * d.rating_w:
                    continue
                rise = room
            room -= max(rise, 0.0)
            new = c.limits[point] + step
            if new >= d.rating_w:
                del c.limits[point]
                released[d.asset.id] = None
            else:
                c.limits[point] = new
                released[d.asset.id] = new
        if released:
            self.stats.releases += 1
            self._event("anm.release", c.element, {"value": c.value, "limits_w": released})

    def _escalate(self, c: _Constraint, output: FloatArray, trips: list[tuple[AnmDer, _Constraint]]) -> None:
        n = self.settings.escalate_cycles
        level = Escalation(min(c.unrelieved // n, int(Escalation.TRIP)))
        if level <= c.escalation:
            return
        c.escalation = level
        self._event("anm.escalated", c.element, {"level": level.name.lower(), "cycles": c.unrelieved, "value": c.value})
        log.warning("event=anm_escalated element=%s level=%s cycles=%d", c.element, level.name.lower(), c.unrelieved)
        if level is Escalation.FAIL_SAFE:
            for point in c.behind:
                d = self._by_point[point]
                c.limits[point] = min(c.limits.get(point, d.rating_w), d.fail_safe_w)
                c.rank.setdefault(point, max(c.rank.values(), default=-1) + 1)
        elif level is Escalation.TRIP:
            tol = self.settings.follow_tolerance
            for point in c.behind:
                if point in c.tripped:
                    continue
                d = self._by_point[point]
                k = self.ders.index(d)
                limit = self._asked.get(point)
                if limit is None or not math.isfinite(output[k]):
                    continue
                if output[k] > limit + tol * d.rating_w:
                    c.tripped.add(point)
                    trips.append((d, c))

    async def _send(self) -> list[str]:
        wanted: dict[str, float | None] = {d.point: None for d in self.ders}
        for c in self._constraints.values():
            for point, limit in c.limits.items():
                held = wanted[point]
                wanted[point] = limit if held is None else min(held, limit)
        changed = []
        for d in self.ders:
            new, old = wanted[d.point], self._asked[d.point]
            if new == old:
                continue
            if new is None:
                outcome = await self.arbiter.release(SetpointSource.ANM, d.point, reason="ANM: constraint relieved")
            else:
                request = SetpointRequest(
                    SetpointSource.ANM, d.point, new, "ANM: constraint behind this DER", actor=self.settings.actor
                )
                outcome = await self.arbiter.submit(request)
            self.stats.submits += 1
            if outcome.status == "refused":
                self.stats.refused += 1
                log.warning(
                    "event=anm_setpoint_refused point=%s rule=%s reason=%r", d.point, outcome.rule, outcome.reason
                )
                continue  # not held: asked again next cycle
            self._asked[d.point] = new
            changed.append(d.point)
        return changed

    async def _trip(self, der: AnmDer, c: _Constraint) -> None:
        self.stats.trips += 1
        payload: dict[str, Any] = {"asset": der.asset.id, "point": der.point, "switch": der.trip_switch}
        try:
            if der.trip_switch is not None:
                request = SwitchingRequest(der.trip_switch, SwitchAction.OPEN, actor=self.settings.actor)
                outcome = await self.dispatcher.execute(request, path=CommandPath.ANM)
                payload["status"] = outcome.status
            else:
                c.limits[der.point] = 0.0
                sent = await self.arbiter.submit(
                    SetpointRequest(SetpointSource.ANM, der.point, 0.0, "ANM: trip", actor=self.settings.actor)
                )
                if sent.status != "refused":
                    self._asked[der.point] = 0.0
                payload["status"] = sent.status
        except OpenDSOError as exc:
            payload["status"] = "failed"
            payload["error"] = str(exc)
        self._event("anm.trip", c.element, payload)

    def _event(self, kind: str, element: str, payload: Mapping[str, Any]) -> None:
        log.info("event=%s element=%s %s", kind, element, " ".join(f"{k}={v}" for k, v in payload.items()))
        if self.events is not None:
            self.events.append(kind, actor=self.settings.actor, element=element, payload=dict(payload))

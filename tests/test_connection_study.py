"""Connection-request studies: firm capacity and curtailment per principle of access, against brute force.

The independent reference is built here: a power-grid-model model with the DER as ``sym_gen``
rows, one Newton-Raphson power flow per step and per trial (no batch), and the principles'
rules coded directly (last-in-first-off: bisection on the newest DER's output, then the next;
pro-rata: bisection on one common share). On SimBench's rural LV grid every DER is behind the
transformer, which is the limit that binds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from power_grid_model import CalculationMethod, LoadGenType, PowerGridModel, initialize_array
from test_switching_api import make_api

from opendso.calc.hosting_capacity import ACCURACY_FRACTION, ACCURACY_MW
from opendso.calc.timeseries import ViolationLimits
from opendso.cli.command import main
from opendso.cli.database import database_of
from opendso.der import AccessPrinciple, Agreement, AgreementKind, AssetKind, DerAsset, DerRegistry, RequestStatus
from opendso.der.studies import ConnectionStudy, StudyDer, connection_study, der_injections, study_ders
from opendso.errors import ConflictError, NotFoundError
from opendso.grid import Grid, load_grid
from opendso.store import Historian, migrate
from opendso.store.der import DerStore
from opendso.store.engine import create_engine

LV = "simbench:1-LV-rural1--0-sw"
STEPS = 96 * 7  # the first week of January: PV peaks of about a quarter of capacity
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
LIMITS = ViolationLimits()


@pytest.fixture(scope="module")
def grid() -> Grid:
    return load_grid(LV)


def _pv(asset_id: str, node: str, kw: float, *, flexible: bool = True) -> DerAsset:
    agreement = Agreement(AgreementKind.FLEXIBLE, AccessPrinciple.LIFO, 20.0, 0.0) if flexible else Agreement()
    return DerAsset(
        asset_id, f"Solar {asset_id}", AssetKind.PV, node, "Sunny Fields Ltd", export_kw=kw, agreement=agreement
    )


def _populate(registry: DerRegistry, grid: Grid) -> None:
    """A1 connected (no request), A2 ahead in the queue (R1), A3 the request studied (R2); F1 firm, connected."""
    names = [str(n) for n in grid.names_of("node")]
    registry.add_asset(_pv("A1", names[5], 400.0), actor="t")
    registry.add_asset(_pv("A2", names[8], 400.0), actor="t")
    registry.add_asset(_pv("A3", names[10], 100.0), actor="t")
    registry.add_asset(_pv("F1", names[12], 20.0, flexible=False), actor="t")
    registry.add_asset(_pv("W1", names[11], 50.0), actor="t")
    registry.submit("R1", "A2", received_at=T0, actor="t")
    registry.submit("R2", "A3", received_at=T0 + timedelta(days=1), actor="t")
    registry.submit("RW", "W1", received_at=T0 - timedelta(days=1), actor="t")
    registry.move("RW", 1, RequestStatus.WITHDRAWN, actor="t")  # withdrawn: not modelled


@pytest.fixture(scope="module")
def registry(grid: Grid, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DerRegistry]:
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('study') / 'der.db'}")
    migrate.upgrade(engine)
    reg = DerRegistry(DerStore(engine), grid, clock=lambda: T0)
    _populate(reg, grid)
    yield reg
    engine.dispose()


@pytest.fixture(scope="module")
def study(registry: DerRegistry) -> ConnectionStudy:
    return connection_study(registry, "R2", steps=STEPS)


# -- the independent reference -------------------------------------------------------------------------------
class Brute:
    """Single Newton-Raphson power flows with the DER as sym_gen rows."""

    def __init__(self, grid: Grid, nodes: list[str]) -> None:
        assert grid.profiles is not None
        self.grid = grid
        data = {c: a.copy() for c, a in grid.pgm_input().items()}
        row_of = {str(n): i for i, n in enumerate(grid.names_of("node").tolist())}
        gens = initialize_array("input", "sym_gen", len(nodes))
        gens["id"] = np.arange(grid.max_id + 1, grid.max_id + 1 + len(nodes))
        gens["node"] = [int(grid.component("node")["id"][row_of[n]]) for n in nodes]
        gens["status"] = 1
        gens["type"] = LoadGenType.const_power
        gens["p_specified"] = 0.0
        gens["q_specified"] = 0.0
        self.gen_ids = gens["id"]
        data["sym_gen"] = np.concatenate([data["sym_gen"], gens]) if "sym_gen" in data else gens
        self.model = PowerGridModel(data, system_frequency=grid.frequency_hz)

    def feasible(self, step: int, gen_w: np.ndarray) -> bool:
        profiles = self.grid.profiles
        assert profiles is not None
        update: dict[str, Any] = {}
        for a in profiles.assignments:
            array = update.setdefault(a.component, initialize_array("update", a.component, a.ids.size))
            array["id"] = a.ids
            array[a.attribute] = a.evaluate(profiles.values[step : step + 1])[0]
        extra = initialize_array("update", "sym_gen", self.gen_ids.size)
        extra["id"] = self.gen_ids
        extra["p_specified"] = gen_w
        update["sym_gen"] = np.concatenate([update["sym_gen"], extra]) if "sym_gen" in update else extra
        self.model.update(update_data=update)
        out = self.model.calculate_power_flow(
            calculation_method=CalculationMethod.newton_raphson, error_tolerance=1e-10
        )
        node = out["node"]
        live = node["energized"] == 1
        if ((node["u_pu"][live] < LIMITS.u_min_pu) | (node["u_pu"][live] > LIMITS.u_max_pu)).any():
            return False
        return all((out[c]["loading"] <= LIMITS.loading_max).all() for c in ("line", "transformer") if c in out)


def _bisect(ok: Any) -> float:
    """Smallest share in 0..1 for which ``ok(share)`` holds (ok(1) holds), to 1e-6."""
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _brute_curtailment(grid: Grid, study: ConnectionStudy, principle: AccessPrinciple) -> np.ndarray:
    """Curtailed MWh per DER of the study, step by step with single power flows."""
    ders = list(study.ders)
    full = -der_injections(grid, ders, study.steps)  # generation, W
    flexible = np.array([d.role == "request" or d.asset.agreement.flexible for d in ders])
    brute = Brute(grid, [d.asset.node for d in ders])
    curtailed = np.zeros(len(ders))
    newest_first = sorted(np.flatnonzero(flexible), key=lambda k: -ders[k].seniority)
    for step in range(study.steps):
        if brute.feasible(step, full[step]):
            continue
        share = np.zeros(len(ders))
        if principle is AccessPrinciple.PRO_RATA:
            f = _bisect(lambda s, step=step: brute.feasible(step, full[step] * np.where(flexible, 1 - s, 1.0)))
            share[flexible] = f
        else:
            for k in newest_first:
                share[k] = 1.0
                if not brute.feasible(step, full[step] * (1 - share)):
                    continue

                def ok(s: float, k: int = k, step: int = step, share: np.ndarray = share) -> bool:
                    trial = share.copy()
                    trial[k] = s
                    return brute.feasible(step, full[step] * (1 - trial))

                share[k] = _bisect(ok)
                break
        curtailed += share * full[step] * study.step_hours / 1e6
    return curtailed


# -- tests -----------------------------------------------------------------------------------------------------
def test_the_study_models_connected_assets_and_requests_ahead(study: ConnectionStudy) -> None:
    roles = [(d.asset.id, d.role) for d in study.ders]
    # A1 and F1 have no request (registered as existing: the most senior, by id); W1's request was
    # withdrawn, so W1 is neither connected nor queued; A2 is ahead; A3 is the request, the newest
    assert roles == [("A1", "connected"), ("F1", "connected"), ("A2", "ahead"), ("A3", "request")]
    assert [d.seniority for d in study.ders] == [0, 1, 2, 3]
    payload = json.loads(json.dumps(study.to_dict()))
    assert {p["principle"] for p in payload["flexible"]} == {"lifo", "pro_rata", "technical_best"}
    assert payload["steps"] == STEPS
    assert payload["step_hours"] == 0.25


def _small_registry(grid: Grid, ahead_kw: float | None) -> DerRegistry:
    """The request A3 (100 kW) alone, or with a PV of ``ahead_kw`` ahead of it in the queue."""
    names = [str(n) for n in grid.names_of("node")]
    engine = create_engine("sqlite://")
    migrate.upgrade(engine)
    reg = DerRegistry(DerStore(engine), grid)
    if ahead_kw is not None:
        reg.add_asset(_pv("A2", names[8], ahead_kw), actor="t")
        reg.submit("R1", "A2", received_at=T0, actor="t")
    reg.add_asset(_pv("A3", names[10], 100.0), actor="t")
    reg.submit("R2", "A3", received_at=T0 + timedelta(days=1), actor="t")
    return reg


def test_firm_capacity_agrees_with_single_power_flows(grid: Grid) -> None:
    principles = (AccessPrinciple.LIFO,)
    study = connection_study(_small_registry(grid, 300.0), "R2", steps=STEPS, principles=principles)
    ders = list(study.ders[:-1])
    full = -der_injections(grid, ders, STEPS)
    brute = Brute(grid, [d.asset.node for d in ders] + [study.node])
    gen = study.firm.generation_mw * 1e6
    assert gen > 0

    def feasible(extra_w: float) -> bool:
        return all(brute.feasible(s, np.append(full[s], extra_w)) for s in range(STEPS))

    assert feasible(gen)
    step = max(ACCURACY_FRACTION * gen, ACCURACY_MW * 1e6)
    assert not feasible(gen + step * 1.05)
    assert study.firm_export_kw == pytest.approx(min(100.0, study.firm.generation_mw * 1e3))
    # without the DER ahead of it the node hosts more: the queue ahead is taken into account
    alone = connection_study(_small_registry(grid, None), "R2", steps=STEPS, principles=principles)
    assert alone.firm.generation_mw > study.firm.generation_mw + 0.05


def test_a_queue_ahead_that_fills_the_grid_leaves_no_firm_capacity(study: ConnectionStudy) -> None:
    assert study.firm.generation_mw == 0.0
    assert study.firm_export_kw == 0.0
    assert study.firm.generation_limit is not None
    assert study.firm.generation_limit.kind == "thermal"


@pytest.mark.parametrize("principle", [AccessPrinciple.LIFO, AccessPrinciple.PRO_RATA])
def test_curtailment_agrees_with_brute_force(grid: Grid, study: ConnectionStudy, principle: AccessPrinciple) -> None:
    outcome = next(p for p in study.principles if p.principle is principle)
    mine = np.array([o.curtailed_mwh for o in outcome.others] + [outcome.request.curtailed_mwh])
    reference = _brute_curtailment(grid, study, principle)
    assert reference.sum() > 0.05  # the week does curtail
    assert mine == pytest.approx(reference, rel=0.01, abs=2e-3)
    assert outcome.verified
    assert outcome.unresolved_steps == 0
    assert outcome.max_violation <= 1e-6


def test_lifo_curtails_the_newest_first(study: ConnectionStudy) -> None:
    lifo = next(p for p in study.principles if p.principle is AccessPrinciple.LIFO)
    c = lifo.curtailment  # (steps, DER): A1, F1, A2, A3 (the request)
    assert (c[:, 1] == 0).all()  # firm: never
    curtailed = c.max(axis=1) > 0
    assert curtailed.any()
    assert (c[curtailed, 3] > 0).all()  # the request at every curtailed step
    older = c[:, 2] > 0
    assert older.any()
    assert (c[older, 3] == 1.0).all()
    assert (c[c[:, 0] > 0, 2] == 1.0).all()  # A1 only once A2 is off
    assert lifo.request.curtailed_pct > 0
    assert lifo.request.curtailed_pct == pytest.approx(100 * lifo.request.curtailed_mwh / study.request_energy_mwh)


def test_pro_rata_curtails_in_proportion_and_technical_best_is_not_worse(study: ConnectionStudy) -> None:
    by = {p.principle: p for p in study.principles}
    c = by[AccessPrinciple.PRO_RATA].curtailment
    rows = c.max(axis=1) > 0
    assert rows.any()
    flexible = c[rows][:, [0, 2, 3]]
    assert np.allclose(flexible, flexible[:, :1])  # one share for all: curtailment in proportion to output
    assert (c[:, 1] == 0).all()
    total = {p: o.request.curtailed_mwh + sum(x.curtailed_mwh for x in o.others) for p, o in by.items()}
    assert total[AccessPrinciple.TECHNICAL_BEST] <= total[AccessPrinciple.PRO_RATA] + 1e-6
    assert by[AccessPrinciple.TECHNICAL_BEST].verified


def test_bad_requests_are_refused(registry: DerRegistry) -> None:
    with pytest.raises(NotFoundError):
        connection_study(registry, "NOPE", steps=4)
    with pytest.raises(NotFoundError):
        study_ders(registry, "NOPE")


def test_a_request_no_longer_queued_is_a_conflict(grid: Grid) -> None:
    engine = create_engine("sqlite://")
    migrate.upgrade(engine)
    reg = DerRegistry(DerStore(engine), grid)
    reg.add_asset(_pv("A9", str(grid.names_of("node")[5]), 50.0), actor="t")
    reg.submit("R9", "A9", received_at=T0, actor="t")
    reg.move("R9", 1, RequestStatus.WITHDRAWN, actor="t")
    with pytest.raises(ConflictError):
        connection_study(reg, "R9", steps=4)


def test_cli_json_and_unknown_request_exits_2(grid: Grid, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    choice = database_of(argparse.Namespace(data_dir=str(tmp_path), database_url=None))
    historian = Historian.open(choice.url, key_path=choice.key_path)
    try:
        _populate(DerRegistry(DerStore(historian.engine), grid, clock=lambda: T0), grid)
    finally:
        historian.close()
    assert main(["der", "study", "R2", "--grid", LV, "--steps", "96", *data, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["request_id"] == "R2"
    assert payload["steps"] == 96
    assert set(payload["firm"]) >= {"generation_mw", "load_mw", "generation_limit", "export_kw"}
    assert main(["der", "study", "R2", "--grid", LV, "--steps", "96", *data]) == 0
    assert "lifo" in capsys.readouterr().out
    assert main(["der", "study", "NOPE", "--grid", LV, "--steps", "4", *data]) == 2
    assert "NOPE" in capsys.readouterr().err
    assert main(["der", "study", "R2", "--grid", LV, "--steps", "0", *data]) == 2


def test_api_study_for_viewers_and_404(grid: Grid, tmp_path: Path) -> None:
    api = make_api(grid, tmp_path)
    try:
        _populate(DerRegistry(DerStore(api.historian.engine), grid, clock=lambda: T0), grid)
        client, headers = api.client("viewer")
        got = client.get("/api/der/requests/R2/study", params={"steps": 96}, headers=headers)
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["request_id"] == "R2"
        assert body["steps"] == 96
        assert [p["principle"] for p in body["flexible"]] == ["lifo", "pro_rata", "technical_best"]
        assert all(p["verified"] for p in body["flexible"])
        assert client.get("/api/der/requests/NOPE/study", headers=headers).status_code == 404
        assert client.get("/api/der/requests/R2/study", params={"steps": 0}, headers=headers).status_code == 422
        assert client.get("/api/der/requests/R2/study", params={"steps": 4}).status_code == 401
    finally:
        api.historian.close()


def test_the_modelling_rule_of_each_kind(grid: Grid) -> None:
    assert grid.profiles is not None
    values = grid.profiles.values
    names = [str(n) for n in grid.names_of("node")]
    gens = grid.component("sym_gen")
    (gen_assignment,) = [a for a in grid.profiles.assignments if a.component == "sym_gen"]
    at_gen = grid.names_of("node")[grid.node_positions([gens["node"][1]])[0]]
    pv_columns = [i for i, c in enumerate(grid.profiles.columns) if c.startswith("PV")]

    def der(kind: AssetKind, node: str, **kw: float) -> StudyDer:
        storage = {"storage_kwh": 100.0} if kind is AssetKind.BATTERY else {}
        asset = DerAsset(f"X{kind.value}", "x", kind, node, "o", **kw, **storage)
        return StudyDer(asset, None, "connected", 0)

    ders = [
        der(AssetKind.PV, str(at_gen), export_kw=10.0),  # a PV generator of the grid at that node
        der(AssetKind.PV, names[0], export_kw=10.0),  # none there: the mean PV profile
        der(AssetKind.BATTERY, names[0], export_kw=5.0, import_kw=5.0),
        der(AssetKind.HEAT_PUMPS, names[0], import_kw=7.0),
    ]
    p = der_injections(grid, ders, 50)
    assert p[:, 0] == pytest.approx(-10e3 * values[:50, gen_assignment.column[1]])
    assert p[:, 1] == pytest.approx(-10e3 * values[:50, pv_columns].mean(axis=1))
    assert (p[:, 2] == -5e3).all()
    assert (p[:, 3] == 7e3).all()


@pytest.mark.parametrize("request_id", ["..%2F..%2Fetc", "x" * 300, "R2%00", "%20"])
def test_hostile_request_ids_are_refused(grid: Grid, tmp_path: Path, request_id: str) -> None:
    api = make_api(grid, tmp_path)
    try:
        client, headers = api.client("viewer")
        got = client.get(f"/api/der/requests/{request_id}/study", params={"steps": 4}, headers=headers)
        assert got.status_code in (400, 404, 422)
    finally:
        api.historian.close()

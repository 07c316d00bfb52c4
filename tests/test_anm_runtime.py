"""ANM in `opendso run`: the registry's flexible DER under the controller, and ``GET /api/anm``.

The grid of ``test_anm`` (three 50 kW PV behind a weak cable) runs in the whole control room
(field simulator over Modbus, monitor, web service) from the PV peak, with ``anm=True``
(``OPENDSO_RUN_ANM``). The runtime adds the DER's export-limit points, the controller relieves
the cable (checked on the twin's own power flow), and the API shows the constraint, the limit of
the newest DER (last-in-first-off) with its owner, and the energy curtailed so far. Without ANM
the route says it is off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_anm import CABLE, PV, anm_grid, make_registry
from test_switching_api import make_api

from opendso.der import AccessPrinciple
from opendso.der.anm import AnmController, anm_ders
from opendso.grid.model import Grid
from opendso.operations.fault_response import FlisrMode
from opendso.operations.setpoints import FlexibleDer, SetpointArbiter, SetpointGate
from opendso.runtime import ControlRoomProcess
from opendso.store import Historian
from opendso.store.integrity import KEY_FILE
from opendso.telemetry.points import point_map_for_grid
from opendso.telemetry.scenario import Scenario
from opendso.telemetry.simulator.der import der_points

PASSWORD = "installer's password"
#: A generous bound for a busy 2-core machine; the waits end as soon as the condition holds.
BOUND_S = 60.0


@pytest.fixture(scope="module")
def grid() -> Grid:
    return anm_grid()


def _wait(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + BOUND_S
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {BOUND_S} s: {what}")
        time.sleep(0.1)


@contextmanager
def _client(process: ControlRoomProcess) -> Iterator[httpx.Client]:
    assert process.url is not None
    with httpx.Client(base_url=process.url, timeout=30) as client:
        answer = client.post("/api/auth/token", json={"username": "admin", "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


def _process(grid: Grid, folder: Path, *, anm: bool) -> ControlRoomProcess:
    return ControlRoomProcess(
        grid,
        folder,
        scenario=Scenario(),
        start_step=2,  # the PV peak: the cable at about 135 %
        speed=60.0,
        period_s=0.5,
        port=0,
        admin_password=PASSWORD,
        flisr=FlisrMode.OFF,
        anm=anm,
    )


def test_opendso_run_with_anm_relieves_the_cable_and_serves_the_state(grid: Grid, tmp_path: Path) -> None:
    registry_db = Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}", key_path=tmp_path / KEY_FILE)
    make_registry(grid, registry_db, AccessPrinciple.LIFO)
    registry_db.close()
    process = _process(grid, tmp_path, anm=True)
    assert {p.name for p in process.point_map.points if p.quantity == "p_limit"} == {f"{g}/p_limit" for g in PV}
    with process.in_thread(timeout_s=BOUND_S):
        controller = process.anm_controller
        assert controller is not None

        def loading() -> float:
            result = process.simulator.result
            names = [f"line:{n}" for n in grid.names_of("line")]
            return float(result.output["line"]["loading"][names.index(CABLE)])

        assert process.call(loading) > 1.2
        _wait(lambda: process.call(loading) < 1.0, "the cable relieved on the twin")
        _wait(lambda: controller.ledger.account("A3").curtailed_mwh > 0, "curtailed energy accounted")
        with _client(process) as client:
            body: dict[str, Any] = client.get("/api/anm").json()
        assert body["running"] is True
        (constraint,) = body["constraints"]
        assert constraint["element"] == CABLE
        assert constraint["kind"] == "thermal"
        ders = {d["asset"]: d for d in body["ders"]}
        assert ders["A3"]["limit_owner"] == "anm"
        assert ders["A3"]["limit_kw"] < 50.0
        assert ders["A3"]["owner"] == "Owner of A3"
        assert ders["A1"]["limit_kw"] is None  # the most senior keeps its export
        assert ders["A3"]["curtailed_mwh"] > 0
        assert body["curtailment"]["by_agreement_mwh"]["lifo"] > 0


def test_viewers_read_the_anm_state(grid: Grid, tmp_path: Path) -> None:
    """Any role that may view reads ``GET /api/anm``; without a session it is 401."""
    api = make_api(grid, tmp_path)
    try:
        viewer, vh = api.client("viewer")
        assert viewer.get("/api/anm", headers=vh).json()["running"] is False
        assert viewer.get("/api/anm").status_code == 401
        registry = make_registry(grid, api.historian, AccessPrinciple.PRO_RATA)
        point_map = der_points(point_map_for_grid(grid, port=0), PV)
        ders = anm_ders(registry, point_map, grid)
        gate = SetpointGate([FlexibleDer(d.point, d.rating_w) for d in ders])
        api.app.state.anm = AnmController(SetpointArbiter(api.app.state.switching.dispatcher, gate), ders)
        body = viewer.get("/api/anm", headers=vh).json()
        assert body["running"] is True
        assert body["constraints"] == []
        assert [(d["asset"], d["principle"], d["limit_kw"], d["curtailed_mwh"]) for d in body["ders"]] == [
            ("A1", "pro_rata", None, 0.0),
            ("A2", "pro_rata", None, 0.0),
            ("A3", "pro_rata", None, 0.0),
        ]
        assert body["ders"][0]["account"]["cap_pct"] == 5.0
    finally:
        api.historian.close()


def test_without_anm_the_route_says_it_is_off(grid: Grid, tmp_path: Path) -> None:
    process = _process(grid, tmp_path, anm=False)
    with process.in_thread(timeout_s=BOUND_S), _client(process) as client:
        assert process.anm_controller is None
        assert client.get("/api/anm").json() == {
            "running": False,
            "constraints": [],
            "ders": [],
            "curtailment": {"ders": [], "by_agreement_mwh": {}, "total_mwh": 0.0},
        }
        client.headers.pop("Authorization")
        assert client.get("/api/anm").status_code == 401

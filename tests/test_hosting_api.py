"""The hosting-capacity API: everyone reads the latest study, engineers start and cancel one, GeoJSON for GIS.

On SimBench 1-LV-rural1 (15 nodes, geographic coordinates, a year of profiles) served by a control
room without a cycle; studies run for real on a Dask LocalCluster in the service's worker thread.
The numbers the API serves are compared with ``opendso hosting-capacity`` run on the same grid and
steps, as a wiring check only: the calculation itself is checked against a brute-force search in
``test_hosting_capacity.py``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geojson
import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_switching_api import Api, make_api

from opendso.cli import main
from opendso.grid.model import Grid
from opendso.service.audit import AuditTrail
from opendso.service.routes.hosting import HostingStudies

LV = "simbench:1-LV-rural1--0-sw"
STEPS = 4
#: Every study here takes well under a second alone; the margin is for a busy 2-core machine.
STUDY_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(LV)


@pytest.fixture
def api(grid: Grid, tmp_path: Path) -> Iterator[Api]:
    service = make_api(grid, tmp_path)
    yield service
    held: HostingStudies | None = getattr(service.app.state, "hosting", None)
    if held is not None:  # a study left running would outlive the test
        if held.status()["status"] == "running":
            held.cancel(by="teardown")
        assert held.wait(STUDY_TIMEOUT_S)
    service.historian.close()


def _wait_for(client: TestClient, headers: dict[str, str], wanted: str) -> dict[str, Any]:
    """Poll the status until it is ``wanted``; fail on any other final status or after the timeout."""
    deadline = time.monotonic() + STUDY_TIMEOUT_S
    while True:
        body: dict[str, Any] = client.get("/api/hosting-capacity", headers=headers).json()
        if body["status"] == wanted:
            return body
        assert body["status"] == "running", body
        assert time.monotonic() < deadline, f"still running after {STUDY_TIMEOUT_S} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cli_study(grid: Grid, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """``opendso hosting-capacity LV --steps 4 --json --geojson FILE``: the JSON object and the GeoJSON."""
    import contextlib
    import io

    where = tmp_path_factory.mktemp("hc-cli") / "hc.geojson"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["hosting-capacity", LV, "--steps", str(STEPS), "--quiet", "--json", "--geojson", str(where)])
    assert code == 0
    return json.loads(out.getvalue()), json.loads(where.read_text())


def test_engineers_run_a_study_everyone_reads_it(
    api: Api, grid: Grid, cli_study: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    viewer, vh = api.client("viewer")
    before = viewer.get("/api/hosting-capacity", headers=vh)
    assert before.status_code == 200, before.text
    assert before.json() | {"profile_steps": None} == {
        "status": "none",
        "progress": None,
        "run": None,
        "error": None,
        "cancelled_by": None,
        "grid": grid.name,
        "profile_steps": None,
        "result": None,
    }
    assert grid.profiles is not None
    assert before.json()["profile_steps"] == grid.profiles.steps
    assert viewer.get("/api/hosting-capacity.geojson", headers=vh).status_code == 404
    for role in ("viewer", "operator", "security_auditor"):
        client, headers = api.client(role)
        refused = client.post("/api/hosting-capacity", json={"steps": STEPS}, headers=headers)
        assert refused.status_code == 403, (role, refused.text)
    assert viewer.get("/api/hosting-capacity", headers=vh).json()["status"] == "none"

    engineer, eh = api.browser("engineer")  # the web UI's path: cookie and CSRF header
    started = engineer.post("/api/hosting-capacity", json={"steps": STEPS}, headers=eh)
    assert started.status_code == 202, started.text
    assert started.json()["status"] in ("running", "done")
    assert started.json()["run"]["steps"] == STEPS
    assert started.json()["run"]["by"] == "engineer"
    done = _wait_for(viewer, vh, "done")
    assert done["progress"]["done"] == done["progress"]["total"] == len(done["result"]["nodes"])
    result = done["result"]
    assert (result["steps"], result["by"]) == (STEPS, "engineer")
    assert result["limits"] == {"u_min": 0.9, "u_max": 1.1, "loading_max": 1.0}
    assert done["run"]["finished_at"] >= done["run"]["started_at"]

    # the same numbers as the command line on the same grid and steps (a wiring check)
    cli, cli_geojson = cli_study
    served = {n["node"]: n for n in result["nodes"]}
    assert [n["node"] for n in result["nodes"]] == [n["node"] for n in cli["nodes"]]
    names = grid.names_of("node").tolist()
    ids = grid.component("node")["id"].tolist()
    for expected in cli["nodes"]:
        got = served[expected["node"]]
        assert got["node_id"] == ids[names.index(expected["node"])]
        assert (got["generation_mw"], got["load_mw"]) == (expected["generation_mw"], expected["load_mw"])
        for which in ("generation_limit", "load_limit"):
            if expected[which] is None:
                assert got[which] is None
                continue
            step = expected[which]["step"]
            assert got[which] == {**expected[which], "time": str(np.datetime_as_string(grid.profiles.time[step], "s"))}
    assert any(n["generation_limit"] is not None for n in result["nodes"])

    # GeoJSON: valid RFC 7946 (an independent validator), the same document as the CLI's --geojson
    exported = viewer.get("/api/hosting-capacity.geojson", headers=vh)
    assert exported.status_code == 200
    parsed = geojson.loads(exported.text)
    assert parsed.is_valid, parsed.errors()
    assert parsed["type"] == "FeatureCollection"
    assert len(parsed["features"]) == len(result["nodes"])
    for feature in parsed["features"]:
        lon, lat = feature["geometry"]["coordinates"]
        assert -180 <= lon <= 180
        assert -90 <= lat <= 90
    assert exported.json() == cli_geojson

    # the start is audited with the actor and the address
    records = [r for r in AuditTrail(api.historian.engine).read() if r.action.startswith("hosting.")]
    assert [(r.action, r.actor, r.element) for r in records] == [("hosting.study_started", "engineer", grid.name)]
    assert records[0].source_ip


def test_a_second_study_waits_for_the_first_and_a_cancel_stops_it(api: Api, grid: Grid) -> None:
    # one node per task: the cancellation takes effect after at most one node's year
    api.app.state.hosting = HostingStudies(chunk_nodes=1)
    engineer, eh = api.client("engineer")
    viewer, vh = api.client("viewer")
    assert engineer.delete("/api/hosting-capacity", headers=eh).status_code == 409  # nothing runs
    year = engineer.post("/api/hosting-capacity", json={}, headers=eh)
    assert year.status_code == 202, year.text
    assert grid.profiles is not None
    assert year.json()["run"]["steps"] == grid.profiles.steps  # no steps: the whole year
    again = engineer.post("/api/hosting-capacity", json={"steps": STEPS}, headers=eh)
    assert again.status_code == 409, again.text
    assert "still running" in again.json()["detail"]
    assert viewer.delete("/api/hosting-capacity", headers=vh).status_code == 403
    running = viewer.get("/api/hosting-capacity", headers=vh).json()
    assert running["status"] == "running"
    assert running["run"]["steps"] == grid.profiles.steps
    cancelled = engineer.delete("/api/hosting-capacity", headers=eh)
    assert cancelled.status_code == 200, cancelled.text
    final = _wait_for(viewer, vh, "cancelled")
    assert (final["cancelled_by"], final["error"], final["result"]) == ("engineer", None, None)
    # the next study runs, and its result is served
    assert engineer.post("/api/hosting-capacity", json={"steps": 2}, headers=eh).status_code == 202
    done = _wait_for(viewer, vh, "done")
    assert done["result"]["steps"] == 2
    actions = [r.action for r in AuditTrail(api.historian.engine).read() if r.action.startswith("hosting.")]
    assert actions == ["hosting.study_started", "hosting.study_cancelled", "hosting.study_started"]


def test_a_failed_study_says_why_and_keeps_the_last_result(api: Api) -> None:
    engineer, eh = api.client("engineer")
    assert engineer.post("/api/hosting-capacity", json={"steps": 2}, headers=eh).status_code == 202
    first = _wait_for(engineer, eh, "done")["result"]
    held: HostingStudies = api.app.state.hosting
    held.scheduler = "inproc://nowhere/1/1"  # a Dask scheduler that does not exist: the client fails
    assert engineer.post("/api/hosting-capacity", json={"steps": 3}, headers=eh).status_code == 202
    failed = _wait_for(engineer, eh, "failed")
    assert "inproc" in failed["error"]
    assert failed["run"]["steps"] == 3
    assert failed["result"] == first  # the map keeps the last finished study
    assert engineer.get("/api/hosting-capacity.geojson", headers=eh).status_code == 200


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": -4}, "steps"),
        ({"steps": "4"}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"u_min": 1.2, "u_max": 1.1}, "u_min"),
        ({"u_min": 0}, "u_min"),
        ({"u_max": "1.1"}, "u_max"),
        ({"loading_max": 0}, "loading_max"),
        ({"loading_max": 1e300}, "loading_max"),
        ({"steps": 4, "scheduler": "tcp://10.0.0.1:8786"}, "scheduler"),
        ([], "body"),
    ],
)
def test_bad_bodies_are_refused_and_nothing_starts(api: Api, body: Any, where: str) -> None:
    engineer, eh = api.client("engineer")
    refused = engineer.post("/api/hosting-capacity", json=body, headers=eh)
    assert refused.status_code == 422, refused.text
    assert where in json.dumps(refused.json()["errors"]) or where in refused.json()["detail"]
    assert engineer.get("/api/hosting-capacity", headers=eh).json()["status"] == "none"


def test_hostile_requests_are_refused(api: Api) -> None:
    engineer, eh = api.client("engineer")
    not_json = engineer.post(
        "/api/hosting-capacity", content=b"{steps: NaN}", headers={**eh, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    # the web UI's cookie session needs its CSRF header to start anything
    browser, _csrf = api.browser("engineer")
    assert browser.post("/api/hosting-capacity", json={"steps": STEPS}).status_code == 403
    anonymous = TestClient(api.app)
    for method, path in (
        ("GET", "/api/hosting-capacity"),
        ("GET", "/api/hosting-capacity.geojson"),
        ("POST", "/api/hosting-capacity"),
        ("DELETE", "/api/hosting-capacity"),
    ):
        assert anonymous.request(method, path, json={}).status_code == 401, (method, path)
    assert engineer.get("/api/hosting-capacity", headers=eh).json()["status"] == "none"


def test_a_grid_without_profiles_is_a_clear_400(grid: Grid, tmp_path: Path) -> None:
    bare = dataclasses.replace(grid, profiles=None)
    service = make_api(bare, tmp_path)
    try:
        engineer, eh = service.client("engineer")
        state = engineer.get("/api/hosting-capacity", headers=eh).json()
        assert (state["status"], state["profile_steps"]) == ("none", 0)
        refused = engineer.post("/api/hosting-capacity", json={"steps": STEPS}, headers=eh)
        assert refused.status_code == 400
        assert "no time profiles" in refused.json()["detail"]
        assert engineer.get("/api/hosting-capacity", headers=eh).json()["status"] == "none"
        assert engineer.get("/api/hosting-capacity.geojson", headers=eh).status_code == 404
    finally:
        service.historian.close()

"""The congestion forecast's command line and API: their JSON shapes, roles, caching, a free event loop, bad input."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pandapower as pp
import pandapower.networks as pn
import pytest
from fastapi.testclient import TestClient
from test_switching_api import Api, make_api

from opendso.cli import main
from opendso.grid import Grid
from opendso.service.security import Role

CODE = "simbench:1-LV-rural1--2-sw"
ISSUED = "2016-06-10T00:00:00Z"
ELEMENT_KEYS = {"element", "kind", "id", "quantity", "max_probability", "probability", "median", "violations"}


def _check_shape(payload: dict[str, object], steps: int, scenarios: int) -> None:
    assert set(payload) == {
        "grid",
        "issued",
        "method",
        "scenarios",
        "steps",
        "time",
        "limits",
        "elements_judged",
        "elements",
        "seconds",
    }
    assert payload["steps"] == steps
    assert payload["scenarios"] == scenarios
    assert payload["method"] == "gaussian copula"
    times = payload["time"]
    assert isinstance(times, list)
    assert len(times) == steps
    assert times[0] == "2016-06-10T00:00:00Z"
    elements = payload["elements"]
    assert isinstance(elements, list)
    assert elements, "the transformer overloads around midday"
    for element in elements:
        assert set(element) == ELEMENT_KEYS
        assert len(element["probability"]) == steps
        assert len(element["median"]) == steps
        for v in element["violations"]:
            assert 0 < v["probability"] <= 1
            assert v["excess"] > 0
            assert ("excess_mva" in v) == (element["kind"] != "node")
            assert all(set(r) == {"node", "p_mw", "q_mvar"} for r in v["relieve"])


# -- command line -----------------------------------------------------------------------------------------
def test_the_command_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["congestion", CODE, "--issued", ISSUED, "--scenarios", "20", "--steps", "64", "--json"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    _check_shape(payload, 64, 20)
    assert payload["grid"] == CODE
    assert payload["issued"] == "2016-06-10T00:00:00Z"
    (trafo,) = [e for e in payload["elements"] if e["kind"] == "transformer"]
    assert trafo["max_probability"] > 0.5
    assert main(["congestion", CODE, "--issued", ISSUED, "--scenarios", "20", "--steps", "64"]) == 0
    text = capsys.readouterr().out
    assert "transformer MV1.101-LV1.101-Trafo 1: up to" in text


@pytest.fixture(scope="module")
def no_profiles(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("grid") / "simple.json"
    pp.to_json(pn.example_simple(), str(path))
    return f"pandapower:{path}"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["congestion", "simbench:1-LV-nowhere--0-sw", "--json"], "nowhere"),
        (["congestion", CODE, "--issued", "next tuesday"], "--issued"),
        (["congestion", CODE, "--issued", "2016-01-03T00:00Z"], "history"),
        (["congestion", CODE, "--issued", "2999-06-10T00:00Z"], "history"),
        (["congestion", CODE, "--issued", ISSUED, "--scenarios", "0"], "scenarios"),
        (["congestion", CODE, "--issued", ISSUED, "--steps", "100000"], "steps"),
        (["congestion", CODE, "--issued", ISSUED, "--u-min", "1.2"], "--u-min"),
        (["congestion", CODE, "--issued", ISSUED, "--loading-max", "-1"], "--loading-max"),
    ],
)
def test_bad_input_exits_2_naming_it(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_a_grid_without_profiles_exits_2(no_profiles: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["congestion", no_profiles, "--issued", ISSUED]) == 2
    assert "profiles" in capsys.readouterr().err


# -- API ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


@pytest.fixture
def api(grid: Grid, tmp_path: Path) -> Iterator[Api]:
    service = make_api(grid, tmp_path)
    yield service
    service.historian.close()


def test_every_role_reads_the_forecast_and_it_is_cached(api: Api) -> None:
    path = f"/api/congestion?issued={ISSUED}&scenarios=20&steps=64"
    first = None
    for role in Role:
        client, headers = api.client(role.value)
        response = client.get(path, headers=headers)
        assert response.status_code == 200, (role, response.text)
        payload = response.json()
        _check_shape(payload, 64, 20)
        if first is None:
            first = payload
        else:
            # served from the cache: a new computation would differ at least in its measured "seconds"
            assert payload == first
    assert TestClient(api.app).get(path).status_code == 401


def test_the_forecast_is_computed_off_the_event_loop(api: Api) -> None:
    viewer, headers = api.client("viewer")
    done = threading.Event()
    answers: list[int] = []

    def ask() -> None:
        answers.append(viewer.get(f"/api/congestion?issued={ISSUED}&scenarios=300", headers=headers).status_code)
        done.set()

    worker = threading.Thread(target=ask)
    worker.start()
    time.sleep(0.3)  # the forecast (300 scenarios x 192 intervals) is computing now
    started = time.perf_counter()
    me = viewer.get("/api/auth/me", headers=headers)
    waited = time.perf_counter() - started
    still_computing = not done.is_set()
    worker.join(timeout=120)
    assert me.status_code == 200
    assert answers == [200]
    assert still_computing, "the forecast finished before the other request: nothing was shown"
    assert waited < 2.0


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("issued=yesterday", 400, "issued"),
        ("issued=2016-06-10T00:00:00", 400, "issued"),  # no zone
        ("issued=2016-01-02T00:00:00Z", 400, "history"),
        ("issued=3000-01-01T00:00:00Z", 400, "history"),
        ("issued=1900-01-01T00:00:00Z", 400, "history"),
        ("u_max=nan", 422, "u_max"),
        ("loading_max=inf", 422, "loading_max"),
        ("scenarios=abc", 422, "scenarios"),
        ("scenarios=0", 422, "scenarios"),
        ("scenarios=100000", 422, "scenarios"),
        ("steps=1000", 422, "steps"),
        ("u_min=1.05&u_max=1.0", 400, "u_min"),
        ("loading_max=0", 422, "loading_max"),
    ],
)
def test_bad_queries_are_4xx_naming_them(api: Api, query: str, status: int, says: str) -> None:
    viewer, headers = api.client("viewer")
    response = viewer.get(f"/api/congestion?{query}", headers=headers)
    assert response.status_code == status, response.text
    assert says in response.text


def test_a_running_grid_without_profiles_is_400(grid: Grid, tmp_path: Path) -> None:
    service = make_api(replace(grid, profiles=None), tmp_path)
    try:
        viewer, headers = service.client("viewer")
        response = viewer.get("/api/congestion", headers=headers)
        assert response.status_code == 400, response.text
        assert "profiles" in response.text
    finally:
        service.historian.close()

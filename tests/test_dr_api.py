"""Demand response in the control room: ``/api/dr`` over a real VTN and a real openleadr VEN with mutual TLS.

The VTN itself is checked in test_openadr.py; here the routes drive it: an engineer enrolls a VEN
through the API, the VEN (openleadr's own client, so what it sees is what a third-party VEN
would) registers over mutual TLS, an operator creates a level event through the API, the VEN
receives exactly the signal and intervals the operator asked for and opts in, and the API shows
the opt-in; cancellation reaches the VEN. Roles, bad bodies (422/400 naming the field), unknown
VENs and assets (404), demand response off (409) and the audit trail are checked too. The API is
called over ASGI in the VTN's own event loop, as ``opendso run`` serves both in one loop.

:func:`~opendso.runtime.apply_dr_events` (the control room's scheduling of event intervals into
the set-point arbiter) is checked against the program's level table worked by hand (share x
rating: level 2 = 25 %, level 1 = 50 % of 100 kW), and the settings refuse a partial TLS setup.
Every wait polls with a deadline of many poll intervals (1 s each) for a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import trustme
from openleadr import OpenADRClient, utils  # type: ignore[import-untyped]
from test_switching_api import PASSWORD, Api, make_api

from opendso.der import AssetKind, Control, ControlProtocol, DerAsset, DerRegistry
from opendso.der.openadr import DemandResponseVtn, DrEvent, DrInterval, DrSignal, VtnTls
from opendso.errors import SettingsError
from opendso.grid.model import Grid
from opendso.operations.fault_response import FlisrMode
from opendso.operations.setpoints.model import FlexibleDer, SetpointOutcome, SetpointRequest, SetpointSource
from opendso.runtime import ControlRoomProcess, apply_dr_events
from opendso.service.audit import AuditTrail
from opendso.settings import OpenAdrConfig, get_settings
from opendso.store.der import DerStore
from opendso.telemetry.scenario import Scenario

POLL = timedelta(seconds=1)
DEADLINE_S = 20 * POLL.total_seconds()
CODE = "simbench:1-LV-rural1--0-sw"


@dataclass
class Pki:
    folder: Path
    ca: trustme.CA
    tls: VtnTls
    vtn_fingerprint: str

    def ven_cert(self, name: str) -> tuple[Path, Path, str]:
        leaf = self.ca.issue_cert(f"{name}.ven.example")
        cert, key = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key, utils.certificate_fingerprint(leaf.cert_chain_pems[0].bytes())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("dr-pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(folder / "vtn.pem"))
    server.private_key_pem.write_to_path(str(folder / "vtn.key"))
    tls = VtnTls(folder / "vtn.pem", folder / "vtn.key", folder / "ca.pem")
    return Pki(folder, ca, tls, utils.certificate_fingerprint(server.cert_chain_pems[0].bytes()))


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


def battery(asset_id: str, node: str, *, owner: str, aggregator: str = "", openadr: bool = False) -> DerAsset:
    control = Control(ControlProtocol.OPENADR, f"oadr:{asset_id}") if openadr else Control()
    return DerAsset(
        asset_id,
        f"Battery {asset_id}",
        AssetKind.BATTERY,
        node,
        owner,
        aggregator=aggregator,
        export_kw=100.0,
        import_kw=100.0,
        storage_kwh=200.0,
        control=control,
    )


@pytest.fixture
def api(grid: Grid, tmp_path: Path) -> Iterator[Api]:
    service = make_api(grid, tmp_path)
    registry = DerRegistry(DerStore(service.historian.engine), grid)
    nodes = [str(n) for n in grid.names_of("node").tolist()]
    registry.add_asset(battery("B1", nodes[3], owner="Home One", openadr=True), actor="test")
    registry.add_asset(battery("B2", nodes[4], owner="Farm Two", aggregator="FlexCo"), actor="test")
    yield service
    service.historian.close()


@pytest_asyncio.fixture
async def vtn(api: Api, pki: Pki) -> AsyncIterator[DemandResponseVtn]:
    registry = DerRegistry(DerStore(api.historian.engine), api.grid)
    server = DemandResponseVtn("OPENDSO-VTN", registry, tls=pki.tls, poll_interval=POLL, report_interval=POLL)
    await server.start()
    api.app.state.dr = server
    yield server
    await server.stop()


@contextlib.asynccontextmanager
async def clients(api: Api) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A bearer-token client per role, calling the app over ASGI in this event loop."""
    transport = httpx.ASGITransport(app=api.app)
    async with contextlib.AsyncExitStack() as stack:
        out: dict[str, httpx.AsyncClient] = {}
        for role in ("viewer", "operator", "engineer"):
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)
            )
            token = await client.post("/api/auth/token", data={"username": role, "password": PASSWORD})
            assert token.status_code == 200, token.text
            client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            out[role] = client
        yield out


async def until(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")


def soon(minutes: float = 5.0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=minutes)


async def stop_ven(ven: OpenADRClient) -> None:
    if ven.scheduler.running:
        ven.scheduler.shutdown()
    if ven.report_queue_task is not None:
        ven.report_queue_task.cancel()
    if ven.client_session is not None and not ven.client_session.closed:
        await ven.client_session.close()


def level_body(start: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "signal": "level",
        "intervals": [
            {"start": start.isoformat(), "duration_s": 900, "value": 2},
            {"start": (start + timedelta(seconds=900)).isoformat(), "duration_s": 900, "value": 1},
        ],
        "reason": "evening peak",
        **extra,
    }


# -- end to end ---------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_enroll_register_event_opt_in_and_cancel_through_the_api(
    api: Api, pki: Pki, vtn: DemandResponseVtn
) -> None:
    cert, key, fingerprint = pki.ven_cert("home")
    enrollment = {"ven_name": "home-ven", "fingerprint": fingerprint, "assets": ["B1"], "party": "Home One"}
    async with clients(api) as c:
        # an operator may not enroll; an engineer may
        refused = await c["operator"].post("/api/dr/enrollments", json=enrollment)
        assert refused.status_code == 403, refused.text
        made = await c["engineer"].post("/api/dr/enrollments", json=enrollment)
        assert made.status_code == 201, made.text
        assert made.json()["registered"] is False
        assert made.json()["assets"] == ["B1"]
        taken = await c["engineer"].post("/api/dr/enrollments", json=enrollment)
        assert taken.status_code == 409, taken.text

        state = (await c["viewer"].get("/api/dr")).json()
        assert state["on"] is True
        assert state["url"] == vtn.url
        assert state["url"].startswith("https://127.0.0.1:")
        assert [v["ven_name"] for v in state["vens"]] == ["home-ven"]

        ven = OpenADRClient(
            ven_name="home-ven",
            vtn_url=vtn.url,
            cert=str(cert),
            key=str(key),
            ca_file=str(pki.folder / "ca.pem"),
            vtn_fingerprint=pki.vtn_fingerprint,
            show_fingerprint=False,
        )
        received: list[dict[str, Any]] = []

        async def on_event(event: dict[str, Any]) -> str:
            received.append(event)
            return "optIn"

        ven.add_handler("on_event", on_event)
        try:
            await ven.run()

            async def registered() -> bool:
                body = (await c["viewer"].get("/api/dr")).json()
                return bool(body["vens"][0]["registered"])

            await until("the VEN registers", registered)
            assert ven.ven_id == made.json()["ven_id"]

            # a viewer may not create events; an operator may
            start = soon()
            refused = await c["viewer"].post("/api/dr/events", json=level_body(start, vens=["home-ven"]))
            assert refused.status_code == 403, refused.text
            created = await c["operator"].post("/api/dr/events", json=level_body(start, vens=["home-ven"]))
            assert created.status_code == 201, created.text
            event = created.json()
            assert (event["signal"], event["origin"], event["status"]) == ("level", "operator", "far")
            assert event["targeted_vens"] == ["home-ven"]
            assert event["assets_reached"] == ["B1"]
            assert event["opts"] == {"home-ven": None}

            # the VEN gets exactly what the operator asked for, and opts in; the API shows it
            async def opted() -> Any:
                events = (await c["viewer"].get("/api/dr/events")).json()["events"]
                return events[0]["opts"]["home-ven"]

            opt = await until("the VEN opts in", opted)
            assert opt["opt"] == "optIn"
            (got,) = received
            (signal,) = got["event_signals"]
            assert (signal["signal_name"], signal["signal_type"]) == ("SIMPLE", "level")
            assert [(i["dtstart"], i["duration"], i["signal_payload"]) for i in signal["intervals"]] == [
                (start, timedelta(seconds=900), 2.0),
                (start + timedelta(seconds=900), timedelta(seconds=900), 1.0),
            ]
            assert got["targets"] == [{"ven_id": ven.ven_id}]

            # cancellation: once, and it reaches the VEN
            cancelled = await c["operator"].post(f"/api/dr/events/{event['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["status"] == "cancelled"
            again = await c["operator"].post(f"/api/dr/events/{event['id']}/cancel")
            assert again.status_code == 409, again.text
            assert "cancelled already" in again.text
            await until(
                "the VEN sees the cancellation",
                lambda: any(e["event_descriptor"]["event_status"] == "cancelled" for e in ven.received_events),
            )
            unknown = await c["operator"].post("/api/dr/events/no-such-event/cancel")
            assert unknown.status_code == 404, unknown.text
        finally:
            await stop_ven(ven)

        # withdrawal: engineers only, once
        refused = await c["operator"].delete("/api/dr/enrollments/home-ven")
        assert refused.status_code == 403, refused.text
        gone = await c["engineer"].delete("/api/dr/enrollments/home-ven")
        assert gone.status_code == 200, gone.text
        assert (await c["viewer"].get("/api/dr")).json()["vens"] == []
        missing = await c["engineer"].delete("/api/dr/enrollments/home-ven")
        assert missing.status_code == 404, missing.text

    records = [(r.action, r.actor, r.element) for r in AuditTrail(api.historian.engine).read()]
    assert ("dr.enrolled", "engineer", "ven:home-ven") in records
    assert ("dr.event_created", "operator", f"dr:{event['id']}") in records
    assert ("dr.event_cancelled", "operator", f"dr:{event['id']}") in records
    assert ("dr.withdrawn", "engineer", "ven:home-ven") in records


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_bad_bodies_are_4xx_naming_the_field(api: Api, pki: Pki, vtn: DemandResponseVtn) -> None:
    _, _, fingerprint = pki.ven_cert("agg")
    start = soon()
    async with clients(api) as c:
        good = {"ven_name": "flexco-ven", "fingerprint": fingerprint, "assets": ["B2"], "party": "FlexCo"}
        enroll_cases: list[tuple[dict[str, Any], int, str]] = [
            ({**good, "fingerprint": "12:34"}, 400, "fingerprint"),
            ({**good, "assets": []}, 422, "assets"),
            ({**good, "assets": ["B 2"]}, 422, "assets"),
            ({**good, "assets": ["NOPE"]}, 404, "NOPE"),
            ({**good, "party": "Someone Else"}, 403, "party"),
            ({**good, "colour": "red"}, 422, "colour"),
            ({k: v for k, v in good.items() if k != "ven_name"}, 422, "ven_name"),
        ]
        for body, code, says in enroll_cases:
            answer = await c["engineer"].post("/api/dr/enrollments", json=body)
            assert answer.status_code == code, (body, answer.text)
            assert says in answer.text, (body, answer.text)
        assert (await c["engineer"].post("/api/dr/enrollments", json=good)).status_code == 201

        base = level_body(start, assets=["B2"])
        shifted = level_body(start, assets=["B2"])
        shifted["intervals"][1]["start"] = (start + timedelta(seconds=1000)).isoformat()
        event_cases: list[tuple[dict[str, Any], int, str]] = [
            ({**base, "signal": "volts"}, 422, "signal"),
            ({**base, "intervals": []}, 422, "intervals"),
            ({**base, "intervals": [{"start": "2026-12-01T10:00:00", "duration_s": 900, "value": 1}]}, 400, "start"),
            ({**base, "intervals": [{"start": "tomorrow", "duration_s": 900, "value": 1}]}, 400, "intervals[0].start"),
            ({**base, "intervals": [{"start": start.isoformat(), "duration_s": 0, "value": 1}]}, 422, "duration_s"),
            ({**base, "intervals": [{"start": start.isoformat(), "duration_s": 900, "value": 7}]}, 400, "level"),
            (shifted, 400, "consecutive"),
            ({**base, "assets": []}, 400, "no target"),
            ({**base, "reason": ""}, 422, "reason"),
            ({**base, "assets": ["B1"]}, 404, "B1"),  # in the registry, but no enrolled VEN holds it
            ({**base, "assets": [], "vens": ["ghost-ven"]}, 404, "ghost-ven"),
        ]
        for body, code, says in event_cases:
            answer = await c["operator"].post("/api/dr/events", json=body)
            assert answer.status_code == code, (body, answer.text)
            assert says in answer.text, (body, answer.text)
        # none of them made an event; a good one does, and its id cannot be used twice
        assert (await c["viewer"].get("/api/dr/events")).json()["events"] == []
        made = await c["operator"].post("/api/dr/events", json={**base, "id": "EV-1"})
        assert made.status_code == 201, made.text
        assert made.json()["targeted_vens"] == ["flexco-ven"]
        twice = await c["operator"].post("/api/dr/events", json={**base, "id": "EV-1"})
        assert twice.status_code == 409, twice.text


@pytest.mark.asyncio
async def test_demand_response_off_reads_off_and_refuses_changes_with_409(api: Api) -> None:
    start = soon()
    async with clients(api) as c:
        state = await c["viewer"].get("/api/dr")
        assert state.status_code == 200
        assert state.json()["on"] is False
        assert state.json()["vens"] == []
        assert (await c["viewer"].get("/api/dr/events")).json() == {"on": False, "events": []}
        changes = [
            c["engineer"].post(
                "/api/dr/enrollments",
                json={"ven_name": "v", "fingerprint": "AA:" * 9 + "AA", "assets": ["B1"], "party": "Home One"},
            ),
            c["engineer"].delete("/api/dr/enrollments/v"),
            c["operator"].post("/api/dr/events", json=level_body(start, vens=["v"])),
            c["operator"].post("/api/dr/events/EV-1/cancel"),
        ]
        for answer in await asyncio.gather(*changes):
            assert answer.status_code == 409, answer.text
            assert "demand response is off" in answer.text
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://testserver")
    async with anonymous:
        assert (await anonymous.get("/api/dr")).status_code == 401


# -- scheduling into the set-point arbiter ------------------------------------------------------------------------
@dataclass
class RecordingSink:
    """Stands in for the set-point arbiter: keeps what it is asked."""

    submitted: list[SetpointRequest]
    released: list[str]

    async def submit(self, request: SetpointRequest) -> SetpointOutcome:
        self.submitted.append(request)
        return SetpointOutcome("unchanged", request.point, request.limit_w, SetpointSource.DR, None, "recorded", None)

    async def release(self, source: SetpointSource, point: str, *, reason: str) -> SetpointOutcome:
        assert source is SetpointSource.DR
        self.released.append(point)
        return SetpointOutcome("unchanged", point, None, None, None, reason, None)


@pytest.mark.asyncio
async def test_intervals_reach_the_arbiter_when_they_begin_and_are_released_at_the_end(
    api: Api, pki: Pki, vtn: DemandResponseVtn
) -> None:
    _, _, fingerprint = pki.ven_cert("home2")
    vtn.enroll("home-ven", fingerprint, ["B1"], party="Home One")
    t0 = soon(60)
    quarter = timedelta(minutes=15)
    event = DrEvent(
        "EV-S",
        DrSignal.LEVEL,
        (DrInterval(t0, quarter, 2), DrInterval(t0 + quarter, quarter, 1)),
        SetpointSource.OPERATOR,
        vens=("home-ven",),
    )
    vtn.create_event(event)
    ders = {"B1": FlexibleDer("B1/p_limit", 100e3, (), "B1")}
    sink = RecordingSink([], [])
    applied: dict[str, int] = {}
    second = timedelta(seconds=1)

    await apply_dr_events(vtn, sink, ders, t0 - second, applied)
    assert sink.submitted == []  # not begun
    await apply_dr_events(vtn, sink, ders, t0 + second, applied)
    await apply_dr_events(vtn, sink, ders, t0 + 2 * second, applied)  # same interval: nothing new
    await apply_dr_events(vtn, sink, ders, t0 + quarter + second, applied)
    # level 2 = 25 % and level 1 = 50 % of the 100 kW rating (DrProgram's default table)
    assert [(r.point, r.limit_w, r.source) for r in sink.submitted] == [
        ("B1/p_limit", 25e3, SetpointSource.DR),
        ("B1/p_limit", 50e3, SetpointSource.DR),
    ]
    assert sink.released == []
    await apply_dr_events(vtn, sink, ders, t0 + 2 * quarter, applied)
    assert sink.released == ["B1/p_limit"]
    assert applied == {}
    await apply_dr_events(vtn, sink, ders, t0 + 2 * quarter + second, applied)
    assert sink.released == ["B1/p_limit"]  # released once

    # a cancelled event is released at once
    vtn.create_event(
        DrEvent("EV-C", DrSignal.LEVEL, (DrInterval(t0, quarter, 3),), SetpointSource.OPERATOR, vens=("home-ven",))
    )
    await apply_dr_events(vtn, sink, ders, t0 + second, applied)
    assert sink.submitted[-1].limit_w == 0.0  # level 3: no export
    vtn.cancel_event("EV-C")
    await apply_dr_events(vtn, sink, ders, t0 + 2 * second, applied)
    assert sink.released == ["B1/p_limit", "B1/p_limit"]


# -- settings -----------------------------------------------------------------------------------------------------
def test_settings_refuse_a_partial_tls_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CERT", "KEY", "CA", "HOST", "PORT", "POLL_S"):
        monkeypatch.delenv(f"OPENDSO_OPENADR_{name}", raising=False)
    assert get_settings().openadr.enabled is False  # the default: demand response off
    monkeypatch.setenv("OPENDSO_OPENADR_CERT", str(tmp_path / "vtn.pem"))
    monkeypatch.setenv("OPENDSO_OPENADR_KEY", str(tmp_path / "vtn.key"))
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    for name in ("OPENDSO_OPENADR_CERT", "OPENDSO_OPENADR_KEY", "OPENDSO_OPENADR_CA"):
        assert name in message
    assert "missing: OPENDSO_OPENADR_CA" in message
    monkeypatch.setenv("OPENDSO_OPENADR_CA", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("OPENDSO_OPENADR_PORT", "0")
    config = get_settings().openadr
    assert config.enabled is True
    assert (config.host, config.port, config.poll_s) == ("127.0.0.1", 0, 10)
    monkeypatch.setenv("OPENDSO_OPENADR_POLL_S", "0.5")
    with pytest.raises(SettingsError, match="OPENDSO_OPENADR_POLL_S"):
        get_settings()


# -- opendso run ----------------------------------------------------------------------------------------------------
def test_the_control_room_starts_the_vtn_when_configured_and_stops_it(
    pki: Pki, grid_of: Callable[[str], Grid], tmp_path: Path
) -> None:
    config = OpenAdrConfig(cert=pki.tls.cert_file, key=pki.tls.key_file, ca=pki.tls.ca_file, port=0, poll_s=1)
    process = ControlRoomProcess(
        grid_of("demo"), tmp_path, scenario=Scenario(), port=None, flisr=FlisrMode.OFF, anm=False, openadr=config
    )
    cert, key, _ = pki.ven_cert("probe")
    client = ssl.create_default_context(cafile=str(pki.tls.ca_file))
    client.load_cert_chain(str(cert), str(key))
    with process.in_thread():
        vtn = process.dr_vtn
        assert vtn is not None
        assert process.app.state.dr is vtn
        port = vtn.port
        assert port > 0
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")  # mutual TLS handshake with a VEN certificate
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # stopped with the control room


def test_the_control_room_runs_without_demand_response_by_default(
    grid_of: Callable[[str], Grid], tmp_path: Path
) -> None:
    process = ControlRoomProcess(
        grid_of("demo"),
        tmp_path,
        scenario=Scenario(),
        port=None,
        flisr=FlisrMode.OFF,
        anm=False,
        openadr=OpenAdrConfig(),
    )
    assert process.dr_vtn is None
    assert process.app.state.dr is None
    process.historian.close()

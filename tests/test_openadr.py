"""Demand response over OpenADR 2.0b: OpenDSO's VTN against real openleadr VENs over loopback with mutual TLS.

Independent references: the VENs are openleadr's own client (``OpenADRClient``), so what they
receive and send is what a third-party VEN would; the certificates come from ``trustme`` and
the fingerprints from openleadr's ``certificate_fingerprint``; a refused handshake is seen by a
plain ``ssl`` client. Set-point requests are checked against the program's level table worked
by hand (share x rating). Every wait polls the VTN's state with a deadline of several poll
intervals (1 s each) so a busy machine does not fail the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme
from openleadr import OpenADRClient, utils  # type: ignore[import-untyped]

from opendso.der import AssetKind, Control, ControlProtocol, DerAsset, DerRegistry
from opendso.der.openadr import (
    DemandResponseVtn,
    DrEvent,
    DrInterval,
    DrProgram,
    DrSignal,
    VtnTls,
    mutual_tls_context,
    release_event,
    setpoint_requests,
    submit_interval,
)
from opendso.errors import ConflictError, ForbiddenError, InputError, NotFoundError
from opendso.grid.model import Grid
from opendso.operations.setpoints.model import FlexibleDer, SetpointOutcome, SetpointRequest, SetpointSource
from opendso.store import migrate
from opendso.store.der import DerStore
from opendso.store.engine import create_engine

POLL = timedelta(seconds=1)
#: How long a VEN may take to see something: many poll intervals, for 2 busy cores.
DEADLINE_S = 20 * POLL.total_seconds()


# -- certificates, registry, VTN ----------------------------------------------------------------------------------
@dataclass
class Pki:
    folder: Path
    ca: trustme.CA
    tls: VtnTls
    vtn_fingerprint: str

    def ven_cert(self, name: str, *, ca: trustme.CA | None = None) -> tuple[Path, Path, str]:
        """A client certificate for ``name`` (from ``ca``, default the VENs' CA): cert, key, fingerprint."""
        leaf = (ca or self.ca).issue_cert(f"{name}.ven.example")
        cert, key = self.folder / f"{name}-{id(leaf)}.pem", self.folder / f"{name}-{id(leaf)}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key, utils.certificate_fingerprint(leaf.cert_chain_pems[0].bytes())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("openadr-pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(folder / "vtn.pem"))
    server.private_key_pem.write_to_path(str(folder / "vtn.key"))
    tls = VtnTls(folder / "vtn.pem", folder / "vtn.key", folder / "ca.pem")
    return Pki(folder, ca, tls, utils.certificate_fingerprint(server.cert_chain_pems[0].bytes()))


def asset(asset_id: str, node: str, *, owner: str, aggregator: str = "", openadr: bool = False) -> DerAsset:
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
def registry(tmp_path: Path, grid_of: Callable[[str], Grid]) -> Iterator[DerRegistry]:
    grid = grid_of("simbench:1-LV-rural1--0-sw")
    engine = create_engine(f"sqlite:///{tmp_path / 'der.db'}")
    migrate.upgrade(engine)
    reg = DerRegistry(DerStore(engine), grid)
    nodes = [str(n) for n in grid.names_of("node").tolist()]
    for k, record in enumerate(
        [
            asset("B1", nodes[3], owner="Home One", openadr=True),
            asset("B2", nodes[4], owner="Farm Two", aggregator="FlexCo"),
            asset("B3", nodes[5], owner="Farm Three", aggregator="FlexCo"),
            asset("B4", nodes[6], owner="Someone Else"),
        ]
    ):
        reg.add_asset(record, actor=f"test{k}")
    yield reg
    engine.dispose()


@pytest_asyncio.fixture
async def vtn(pki: Pki, registry: DerRegistry) -> AsyncIterator[DemandResponseVtn]:
    server = DemandResponseVtn("OPENDSO-VTN", registry, tls=pki.tls, poll_interval=POLL, report_interval=POLL)
    await server.start()
    yield server
    await server.stop()


def make_ven(pki: Pki, vtn: DemandResponseVtn, name: str, cert: Path, key: Path) -> OpenADRClient:
    return OpenADRClient(
        ven_name=name,
        vtn_url=vtn.url,
        cert=str(cert),
        key=str(key),
        ca_file=str(pki.folder / "ca.pem"),
        vtn_fingerprint=pki.vtn_fingerprint,
        show_fingerprint=False,
    )


async def stop_ven(ven: OpenADRClient) -> None:
    if ven.scheduler.running:
        ven.scheduler.shutdown()
    if ven.report_queue_task is not None:
        ven.report_queue_task.cancel()
    if ven.client_session is not None and not ven.client_session.closed:
        await ven.client_session.close()


async def until(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")


def soon(minutes: float = 5.0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=minutes)


# -- end to end ---------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_vens_register_receive_events_opt_and_report(pki: Pki, vtn: DemandResponseVtn) -> None:
    home_cert, home_key, home_fp = pki.ven_cert("home")
    agg_cert, agg_key, agg_fp = pki.ven_cert("flexco")
    vtn.enroll("home-ven", home_fp, ["B1"], party="Home One")
    vtn.enroll("flexco-ven", agg_fp, ["B2", "B3"], party="FlexCo")

    home = make_ven(pki, vtn, "home-ven", home_cert, home_key)
    agg = make_ven(pki, vtn, "flexco-ven", agg_cert, agg_key)
    received: dict[str, list[dict[str, Any]]] = {"home-ven": [], "flexco-ven": []}

    def answer(name: str, opt: str) -> Callable[[dict[str, Any]], Awaitable[str]]:
        async def on_event(event: dict[str, Any]) -> str:
            received[name].append(event)
            return opt

        return on_event

    home.add_handler("on_event", answer("home-ven", "optIn"))
    agg.add_handler("on_event", answer("flexco-ven", "optOut"))
    # the aggregator reports B2 in kW (scale k): the VTN keeps W
    agg.add_report(
        callback=lambda: 2.5,
        resource_id="B2",
        measurement="RealPower",
        unit="W",
        scale="k",
        sampling_rate=POLL,
        report_duration=timedelta(seconds=60),
    )
    # a report for an asset the VEN is not enrolled for is not requested
    agg.add_report(
        callback=lambda: 99.0,
        resource_id="B4",
        measurement="RealPower",
        unit="W",
        sampling_rate=POLL,
        report_duration=timedelta(seconds=60),
    )
    try:
        await home.run()
        await agg.run()
        # registration: each VEN got the venID given at enrollment
        assert vtn.registered("home-ven")
        assert vtn.registered("flexco-ven")
        assert home.ven_id == vtn.enrollments.get("home-ven").ven_id
        assert agg.ven_id == vtn.enrollments.get("flexco-ven").ven_id

        start = soon()
        level = DrEvent(
            "EV-LEVEL",
            DrSignal.LEVEL,
            (
                DrInterval(start, timedelta(minutes=15), 2),
                DrInterval(start + timedelta(minutes=15), timedelta(minutes=15), 1),
            ),
            SetpointSource.OPERATOR,
            vens=("home-ven",),
            reason="evening peak",
        )
        assert vtn.create_event(level) == ("home-ven",)
        price = DrEvent(
            "EV-PRICE",
            DrSignal.PRICE,
            (DrInterval(start, timedelta(hours=1), 0.31),),
            SetpointSource.MARKET,
            resources=("B3",),
        )
        assert vtn.create_event(price) == ("flexco-ven",)
        assert vtn.event_status("EV-LEVEL") == "far"

        # opt-in / opt-out recorded per VEN and event
        home_opt = await until("home opts in", lambda: vtn.opt("EV-LEVEL", "home-ven"))
        agg_opt = await until("aggregator opts out", lambda: vtn.opt("EV-PRICE", "flexco-ven"))
        assert home_opt.opt_type == "optIn"
        assert agg_opt.opt_type == "optOut"
        assert vtn.opts("EV-LEVEL").keys() == {"home-ven"}

        # what the VENs received: the signal, its intervals (aware times) and the targets
        (got,) = received["home-ven"]
        (signal,) = got["event_signals"]
        assert (signal["signal_name"], signal["signal_type"]) == ("SIMPLE", "level")
        assert [(i["dtstart"], i["duration"], i["signal_payload"]) for i in signal["intervals"]] == [
            (start, timedelta(minutes=15), 2.0),
            (start + timedelta(minutes=15), timedelta(minutes=15), 1.0),
        ]
        assert got["targets"] == [{"ven_id": home.ven_id}]
        (got_price,) = received["flexco-ven"]
        (price_signal,) = got_price["event_signals"]
        assert (price_signal["signal_name"], price_signal["signal_type"]) == ("ELECTRICITY_PRICE", "price")
        assert price_signal["intervals"][0]["signal_payload"] == pytest.approx(0.31, abs=1e-12)
        assert got_price["targets"] == [{"resource_id": "B3"}]

        # reports: 2.5 kW arrives as 2500 W, with times; B4 (not enrolled) was never requested
        await until("two report values", lambda: vtn.telemetry("flexco-ven", "B2").size >= 2)
        series = vtn.telemetry("flexco-ven", "B2")
        assert series.to_numpy() == pytest.approx([2500.0] * series.size, abs=1e-9)
        assert str(series.index.tz) == "UTC"
        assert series.index.is_monotonic_increasing
        assert vtn.telemetry_resources() == [("flexco-ven", "B2")]

        # cancellation reaches the VEN
        vtn.cancel_event("EV-LEVEL")
        assert vtn.event_status("EV-LEVEL") == "cancelled"
        await until(
            "the VEN sees the cancellation",
            lambda: any(e["event_descriptor"]["event_status"] == "cancelled" for e in home.received_events),
        )
        with pytest.raises(ConflictError, match="cancelled already"):
            vtn.cancel_event("EV-LEVEL")
    finally:
        await stop_ven(home)
        await stop_ven(agg)


@pytest.mark.asyncio
async def test_a_registered_ven_cannot_speak_for_another(pki: Pki, vtn: DemandResponseVtn) -> None:
    a_cert, a_key, a_fp = pki.ven_cert("a")
    b_cert, b_key, b_fp = pki.ven_cert("b")
    vtn.enroll("ven-a", a_fp, ["B1"], party="Home One")
    vtn.enroll("ven-b", b_fp, ["B2"], party="FlexCo")
    a, b = make_ven(pki, vtn, "ven-a", a_cert, a_key), make_ven(pki, vtn, "ven-b", b_cert, b_key)
    try:
        await b.run()
        assert vtn.registered("ven-b")
        vtn.create_event(
            DrEvent(
                "EV-A",
                DrSignal.LEVEL,
                (DrInterval(soon(), timedelta(minutes=5), 3),),
                SetpointSource.ANM,
                vens=("ven-a",),
            )
        )
        # ven-a registers too; ven-b polls in ven-a's name with its own certificate: the fingerprint check refuses
        await a.run()
        await until("ven-a answers", lambda: vtn.opt("EV-A", "ven-a"))
        b.ven_id = a.ven_id
        message_type, payload = await b.poll()
        assert message_type != "oadrDistributeEvent"
        assert payload["response"]["response_code"] != 200
    finally:
        await stop_ven(a)
        await stop_ven(b)


# -- refusals ------------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_wrong_fingerprint_is_refused(pki: Pki, vtn: DemandResponseVtn) -> None:
    _, _, enrolled_fp = pki.ven_cert("real")
    other_cert, other_key, other_fp = pki.ven_cert("impostor")  # same CA, another key
    assert other_fp != enrolled_fp
    vtn.enroll("home-ven", enrolled_fp, ["B1"], party="Home One")
    ven = make_ven(pki, vtn, "home-ven", other_cert, other_key)
    try:
        await ven.run()
    finally:
        await stop_ven(ven)
    assert ven.registration_id is None
    assert not vtn.registered("home-ven")
    assert [(r.ven_name, r.reason) for r in vtn.refusals] == [("home-ven", "fingerprint")]


@pytest.mark.asyncio
async def test_an_unknown_ven_name_is_refused(pki: Pki, vtn: DemandResponseVtn) -> None:
    cert, key, fp = pki.ven_cert("stranger")
    vtn.enroll("home-ven", fp, ["B1"], party="Home One")
    ven = make_ven(pki, vtn, "not-enrolled", cert, key)
    try:
        await ven.run()
    finally:
        await stop_ven(ven)
    assert ven.registration_id is None
    assert [(r.ven_name, r.reason) for r in vtn.refusals] == [("not-enrolled", "unknown_ven")]


@pytest.mark.asyncio
async def test_a_ven_whose_asset_left_the_registry_is_refused(
    pki: Pki, vtn: DemandResponseVtn, registry: DerRegistry
) -> None:
    cert, key, fp = pki.ven_cert("flexco")
    vtn.enroll("flexco-ven", fp, ["B2"], party="FlexCo")
    # the asset changes hands after enrollment: FlexCo no longer aggregates it
    old, version = registry.asset("B2")
    moved = DerAsset.from_json({**old.to_json(), "aggregator": "OtherCo"})
    registry.update_asset("B2", version, moved, actor="test")
    ven = make_ven(pki, vtn, "flexco-ven", cert, key)
    try:
        await ven.run()
    finally:
        await stop_ven(ven)
    assert ven.registration_id is None
    assert [(r.ven_name, r.reason) for r in vtn.refusals] == [("flexco-ven", "asset")]


async def handshake_error(vtn: DemandResponseVtn, pki: Pki, cert: tuple[Path, Path] | None) -> BaseException | None:
    """Open TLS to the VTN as a client trusting its CA, with ``cert`` or none, send a request; return the error."""
    context = ssl.create_default_context(cafile=str(pki.folder / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(vtn.host, vtn.port, ssl=context, server_hostname="127.0.0.1"), DEADLINE_S
        )
        try:
            writer.write(b"POST /OpenADR2/Simple/2.0b/EiRegisterParty HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(100), DEADLINE_S)
            if not data:
                return ConnectionResetError("closed by the VTN")
            return None
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
    except (ssl.SSLError, ConnectionError) as exc:
        return exc


@pytest.mark.asyncio
async def test_a_certificate_from_another_ca_is_refused_in_the_handshake(pki: Pki, vtn: DemandResponseVtn) -> None:
    rogue_ca = trustme.CA()
    cert, key, fp = pki.ven_cert("rogue", ca=rogue_ca)
    vtn.enroll("home-ven", fp, ["B1"], party="Home One")  # even its exact fingerprint does not help
    error = await handshake_error(vtn, pki, (cert, key))
    assert error is not None
    ven = make_ven(pki, vtn, "home-ven", cert, key)
    try:
        await ven.run()
    finally:
        await stop_ven(ven)
    assert ven.registration_id is None
    assert not vtn.registered("home-ven")
    assert list(vtn.refusals) == []  # refused by TLS, before OpenADR saw anything
    # the reference: a certificate of the right CA gets an HTTP answer over the same path
    good_cert, good_key, _ = pki.ven_cert("good")
    assert await handshake_error(vtn, pki, (good_cert, good_key)) is None


@pytest.mark.asyncio
async def test_a_client_without_a_certificate_is_refused(pki: Pki, vtn: DemandResponseVtn) -> None:
    error = await handshake_error(vtn, pki, None)
    assert error is not None
    assert list(vtn.refusals) == []


# -- enrollment and events: bad input -----------------------------------------------------------------------------
def test_enrollment_checks_the_registry(pki: Pki, registry: DerRegistry) -> None:
    server = DemandResponseVtn("OPENDSO-VTN", registry, tls=pki.tls)
    fp = "AA:BB:CC:DD:EE:FF:00:11:22:33"
    with pytest.raises(NotFoundError, match="B9 is not in the DER registry"):
        server.enroll("v", fp, ["B9"], party="FlexCo")
    with pytest.raises(ForbiddenError, match="B4 is not controlled over OpenADR"):
        server.enroll("v", fp, ["B4"], party="FlexCo")
    with pytest.raises(InputError, match="not an OpenADR certificate fingerprint"):
        server.enroll("v", "AA:BB", ["B2"], party="FlexCo")
    with pytest.raises(InputError, match="no assets"):
        server.enroll("v", fp, [], party="FlexCo")
    enrollment = server.enroll("v", fp.lower(), ["B2"], party="FlexCo")
    assert enrollment.fingerprint == fp
    with pytest.raises(ConflictError, match="enrolled already"):
        server.enroll("v", fp, ["B3"], party="FlexCo")
    with pytest.raises(ConflictError, match="B2 is enrolled for VEN 'v'"):
        server.enroll("w", fp, ["B2"], party="FlexCo")
    server.withdraw("v")
    assert server.enroll("w", fp, ["B2"], party="FlexCo").assets == ("B2",)
    with pytest.raises(InputError, match="whole seconds"):
        DemandResponseVtn("X", registry, tls=pki.tls, poll_interval=timedelta(milliseconds=500))


T0 = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: DrEvent(
                "E",
                DrSignal.LEVEL,
                (DrInterval(datetime(2026, 12, 1, 17), Q, 1),),
                SetpointSource.OPERATOR,
                vens=("v",),
            ),
            "naive time",
        ),
        (lambda: DrEvent("E", DrSignal.LEVEL, (), SetpointSource.OPERATOR, vens=("v",)), "no intervals"),
        (
            lambda: DrEvent("E", DrSignal.LEVEL, (DrInterval(T0, Q, 4),), SetpointSource.OPERATOR, vens=("v",)),
            "SIMPLE levels",
        ),
        (
            lambda: DrEvent(
                "E", DrSignal.PRICE, (DrInterval(T0, Q, float("nan")),), SetpointSource.MARKET, vens=("v",)
            ),
            "finite",
        ),
        (
            lambda: DrEvent("E", DrSignal.LEVEL, (DrInterval(T0, -Q, 1),), SetpointSource.OPERATOR, vens=("v",)),
            "positive",
        ),
        (
            lambda: DrEvent(
                "E",
                DrSignal.LEVEL,
                (DrInterval(T0, Q, 1), DrInterval(T0 + 2 * Q, Q, 1)),
                SetpointSource.ANM,
                vens=("v",),
            ),
            "consecutive",
        ),
        (lambda: DrEvent("E", DrSignal.LEVEL, (DrInterval(T0, Q, 1),), SetpointSource.OPERATOR), "no target"),
        (lambda: DrEvent("E", DrSignal.LEVEL, (DrInterval(T0, Q, 1),), SetpointSource.FLISR, vens=("v",)), "origin"),
        (lambda: DrEvent("E", "volts", (DrInterval(T0, Q, 1),), SetpointSource.ANM, vens=("v",)), "signal"),  # type: ignore[arg-type]
        (
            lambda: DrEvent("bad id!", DrSignal.LEVEL, (DrInterval(T0, Q, 1),), SetpointSource.ANM, vens=("v",)),
            "DR event id",
        ),
    ],
)
def test_a_bad_event_is_one_input_error(make: Callable[[], DrEvent], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()


@pytest.mark.asyncio
async def test_an_event_for_an_unknown_target_is_refused(pki: Pki, vtn: DemandResponseVtn) -> None:
    with pytest.raises(NotFoundError, match="'ghost' is not enrolled"):
        vtn.create_event(
            DrEvent("E1", DrSignal.LEVEL, (DrInterval(T0, Q, 1),), SetpointSource.OPERATOR, vens=("ghost",))
        )
    with pytest.raises(NotFoundError, match="B2 is not held by an enrolled VEN"):
        vtn.create_event(
            DrEvent("E1", DrSignal.LEVEL, (DrInterval(T0, Q, 1),), SetpointSource.OPERATOR, resources=("B2",))
        )


# -- set-points through the arbiter -----------------------------------------------------------------------------
class FakeArbiter:
    """Records what it is asked (the arbiter itself is tested in test_setpoints.py)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def submit(self, request: SetpointRequest) -> SetpointOutcome:
        self.calls.append(("submit", request))
        return SetpointOutcome("sent", request.point, request.limit_w, request.source, None, "", None)

    async def release(self, source: SetpointSource, point: str, *, reason: str) -> SetpointOutcome:
        self.calls.append(("release", (source, point, reason)))
        return SetpointOutcome("sent", point, None, None, None, reason, None)


@pytest.mark.asyncio
async def test_event_intervals_become_dr_requests_to_the_arbiter(pki: Pki, vtn: DemandResponseVtn) -> None:
    _, _, fp = pki.ven_cert("flexco")
    vtn.enroll("flexco-ven", fp, ["B2", "B3"], party="FlexCo")
    ders = {
        "B2": FlexibleDer("B2.p_limit", 100_000.0, name="B2"),
        "B3": FlexibleDer("B3.p_limit", 40_000.0, name="B3"),
        "B1": FlexibleDer("B1.p_limit", 10_000.0, name="B1"),  # not reached by the event
    }
    event = DrEvent(
        "EV-1",
        DrSignal.LEVEL,
        (DrInterval(T0, Q, 2), DrInterval(T0 + Q, Q, 3), DrInterval(T0 + 2 * Q, Q, 0)),
        SetpointSource.ANM,
        vens=("flexco-ven",),
        reason="transformer overload",
    )
    vtn.create_event(event)
    assert vtn.event_assets("EV-1") == ("B2", "B3")
    # the status follows the wall clock against the intervals: an event that ended, one under way
    now = datetime.now(UTC).replace(microsecond=0)
    for event_id, start, status in (("EV-PAST", now - 3 * Q, "completed"), ("EV-NOW", now - Q / 3, "active")):
        vtn.create_event(
            DrEvent(event_id, DrSignal.LEVEL, (DrInterval(start, Q, 1),), SetpointSource.OPERATOR, resources=("B2",))
        )
        assert vtn.event_status(event_id) == status
    arbiter = FakeArbiter()
    # level 2 = high: 25 % of the rating by the default program (worked by hand: 25 kW and 10 kW)
    await submit_interval(arbiter, vtn.setpoint_requests("EV-1", 0, ders))
    # level 3 = special: 0 W; level 0 = normal: no limit
    await submit_interval(arbiter, vtn.setpoint_requests("EV-1", 1, ders))
    await submit_interval(arbiter, vtn.setpoint_requests("EV-1", 2, ders))
    asked = [(kind, r.point, r.limit_w, r.source) for kind, r in arbiter.calls]
    assert asked == [
        ("submit", "B2.p_limit", 25_000.0, SetpointSource.DR),
        ("submit", "B3.p_limit", 10_000.0, SetpointSource.DR),
        ("submit", "B2.p_limit", 0.0, SetpointSource.DR),
        ("submit", "B3.p_limit", 0.0, SetpointSource.DR),
        ("submit", "B2.p_limit", None, SetpointSource.DR),
        ("submit", "B3.p_limit", None, SetpointSource.DR),
    ]
    first = arbiter.calls[0][1]
    assert first.actor == "dr:anm"
    assert "EV-1" in first.reason
    assert "from anm" in first.reason
    # a price signal asks no export limit; a custom program changes the shares
    price = DrEvent("EV-2", DrSignal.PRICE, (DrInterval(T0, Q, 0.4),), SetpointSource.MARKET, resources=("B2",))
    assert setpoint_requests(price, 0, ders) == []
    gentle = DrProgram(level_export_share={0: None, 1: 0.9, 2: 0.8, 3: 0.5})
    (req,) = setpoint_requests(event, 0, ders, assets=["B3"], program=gentle)
    assert req.limit_w == pytest.approx(0.8 * 40_000.0, abs=1e-9)
    with pytest.raises(InputError, match="interval 5"):
        setpoint_requests(event, 5, ders)
    # the end of the event releases DR on every point it reached
    arbiter.calls.clear()
    await release_event(arbiter, event, ders, assets=vtn.event_assets("EV-1"), reason="cancelled")
    assert [(k, c[0], c[1]) for k, c in arbiter.calls] == [
        ("release", SetpointSource.DR, "B2.p_limit"),
        ("release", SetpointSource.DR, "B3.p_limit"),
    ]


@pytest.mark.asyncio
async def test_malformed_messages_are_refused_and_change_nothing(pki: Pki, vtn: DemandResponseVtn) -> None:
    import aiohttp

    cert, key, fp = pki.ven_cert("home")
    vtn.enroll("home-ven", fp, ["B1"], party="Home One")
    context = ssl.create_default_context(cafile=str(pki.folder / "ca.pem"))
    context.load_cert_chain(str(cert), str(key))
    bodies = [
        (b"<not-xml", "application/xml", 400),
        (b'<?xml version="1.0"?><oadrPayload xmlns="http://openadr.org/oadr-2.0b/2012/07"/>', "application/xml", 400),
        (b"A" * 100_000, "application/xml", 400),
        (b"<oadrPayload/>", "text/plain", 415),
        (b"<" * 600_000, "application/xml", 413),
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for body, media, status in bodies:
            async with session.post(f"{vtn.url}/EiRegisterParty", data=body, headers={"content-type": media}) as r:
                assert r.status == status, body[:30]
    assert not vtn.registered("home-ven")
    assert list(vtn.refusals) == []


@pytest.mark.asyncio
async def test_a_withdrawn_ven_is_refused_when_it_registers_again(pki: Pki, vtn: DemandResponseVtn) -> None:
    cert, key, fp = pki.ven_cert("home")
    vtn.enroll("home-ven", fp, ["B1"], party="Home One")
    ven = make_ven(pki, vtn, "home-ven", cert, key)
    try:
        await ven.run()
        assert vtn.registered("home-ven")
        vtn.withdraw("home-ven")
        # its next message names a venID no longer enrolled: refused (openleadr asks it to re-register)
        refusal = await until("the withdrawn venID is refused", lambda: list(vtn.refusals))
        assert (refusal[0].reason, refusal[0].ven_id) == ("unknown_ven_id", ven.ven_id)
        assert not vtn.registered("home-ven")
        with pytest.raises(NotFoundError, match="not enrolled"):
            vtn.create_event(
                DrEvent("E1", DrSignal.LEVEL, (DrInterval(T0, Q, 1),), SetpointSource.OPERATOR, vens=("home-ven",))
            )
    finally:
        await stop_ven(ven)


def test_bad_tls_material_is_one_input_error(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"key_file .* is not a file"):
        VtnTls(pki.tls.cert_file, tmp_path / "missing.key", pki.tls.ca_file)
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    with pytest.raises(InputError, match="not a matching certificate and key"):
        mutual_tls_context(VtnTls(pki.tls.cert_file, tmp_path / "other.key", pki.tls.ca_file))
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(InputError, match="no usable CA certificate"):
        mutual_tls_context(VtnTls(pki.tls.cert_file, pki.tls.key_file, tmp_path / "empty.pem"))

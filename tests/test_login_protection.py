"""Login protection: per-(user, source) throttling, foreign origins, rate limits, bounded hashing, refusals audited.

Each test reproduces a finding of the control-room review (issue "A control room operators can
trust", items 1-4) and shows it fixed: a login flood no longer starves the service, failed logins
no longer lock an account everywhere, another site cannot log a browser in, refused access is in
the audit trail (aggregated, so a flood cannot fill it), and forwarded headers are believed only
from configured proxies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import _cached_grid
from fastapi.testclient import TestClient
from serving import FAST, PASSWORD, app_of, control_room, serving

from opendso.cli.users import users_command
from opendso.errors import ThrottledError
from opendso.grid.model import Grid
from opendso.runtime import ControlRoomProcess
from opendso.service import ControlRoom, Security, ServiceSettings
from opendso.service.login_gate import LoginGate, LoginLimits
from opendso.service.security import CSRF_HEADER, SecuritySettings
from opendso.store.security_schema import audit, login_throttle

CODE = "simbench:1-MV-urban--0-sw"


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


@pytest.fixture
def room(grid: Grid, tmp_path: Path) -> Iterator[ControlRoom]:
    room = control_room(grid, tmp_path)
    yield room
    room.historian.close()


def client_from(app: object, address: str) -> TestClient:
    return TestClient(app, client=(address, 40000))  # type: ignore[arg-type]


def try_login(client: TestClient, user: str, password: str, **headers: str) -> httpx.Response:
    return client.post("/api/auth/login", json={"username": user, "password": password}, headers=headers)


def audit_rows(room: ControlRoom, action: str) -> list[sa.Row[tuple[object, ...]]]:
    room.audit.flush()
    with room.historian.engine.connect() as conn:
        return list(conn.execute(sa.select(audit).where(audit.c.action == action).order_by(audit.c.seq)).all())


# -- item 2: throttle per (user, source), never a global lock ------------------------------------------
def test_failures_from_one_address_do_not_lock_the_user_out_elsewhere(room: ControlRoom) -> None:
    app = app_of(room)
    attacker, operator = client_from(app, "203.0.113.66"), client_from(app, "10.1.1.20")
    for _ in range(5):
        assert try_login(attacker, "security_administrator", "guess guess guess").status_code == 401
    blocked = try_login(attacker, "security_administrator", PASSWORD)
    assert blocked.status_code == 429  # the right password does not help the throttled address
    assert int(blocked.headers["Retry-After"]) >= 1
    # the administrator at the console is not locked out
    assert try_login(operator, "security_administrator", PASSWORD).status_code == 200
    with room.historian.engine.connect() as conn:
        rows = conn.execute(sa.select(login_throttle)).all()
    assert [(r.username, r.source_ip, r.failures) for r in rows] == [("security_administrator", "203.0.113.66", 5)]
    assert audit_rows(room, "login.throttled")[0].source_ip == "203.0.113.66"


def test_the_wait_doubles_with_each_further_failure(room: ControlRoom) -> None:
    settings = SecuritySettings(
        argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1, throttle_base=timedelta(milliseconds=50)
    )
    security = Security(room.historian.engine, audit=room.audit, settings=settings)
    waits = []
    for attempt in range(8):
        while True:
            try:
                security.authenticate("operator", "wrong wrong wrong", source_ip="198.51.100.4")
            except ThrottledError:
                time.sleep(0.01)  # wait out the throttle: this test is about how long it lasts
                continue
            except Exception:
                break
        with room.historian.engine.connect() as conn:
            row = conn.execute(sa.select(login_throttle)).one()
        assert row.failures == attempt + 1
        waits.append((row.blocked_until_us - row.last_failed_us) / 1e6 if row.blocked_until_us else 0.0)
    assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
    assert waits[4:] == pytest.approx([0.05, 0.1, 0.2, 0.4])


def test_unknown_names_are_throttled_too_but_not_stored(room: ControlRoom) -> None:
    security = Security(room.historian.engine, audit=room.audit, settings=FAST)
    for _ in range(5):
        with pytest.raises(Exception, match="wrong username"):
            security.authenticate("nobody-here", "whatever whatever", source_ip="198.51.100.9")
    with pytest.raises(ThrottledError):
        security.authenticate("nobody-here", "whatever whatever", source_ip="198.51.100.9")
    with room.historian.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(login_throttle)).scalar_one() == 0


def test_users_list_shows_throttles_and_users_enable_lifts_them(
    room: ControlRoom, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a throttle long enough to outlast a busy machine: only `users enable` may lift it here
    app = app_of(room, security=dataclasses.replace(FAST, throttle_base=timedelta(minutes=5)))
    attacker = client_from(app, "203.0.113.7")
    for _ in range(5):
        try_login(attacker, "engineer", "guess guess guess")
    assert try_login(attacker, "engineer", PASSWORD).status_code == 429
    args = {"data_dir": str(tmp_path), "database_url": None}
    assert users_command(argparse.Namespace(users_action="list", **args)) == 0
    out = capsys.readouterr()
    assert "login throttle: 5 failed from 203.0.113.7, blocked until" in out.out
    assert f"database: sqlite:///{tmp_path / 'opendso.db'}" in out.err
    assert users_command(argparse.Namespace(users_action="enable", username="engineer", **args)) == 0
    assert "login throttle lifted for 203.0.113.7" in capsys.readouterr().out
    assert try_login(attacker, "engineer", PASSWORD).status_code == 200
    unlock = audit_rows(room, "user.unlock")
    assert unlock[-1].details == {"sources": ["203.0.113.7"]}


# -- item 2: another site cannot log a browser in (or throttle its user) -------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_login_from_another_origin_is_refused_and_counts_nothing(room: ControlRoom, headers: dict[str, str]) -> None:
    client = client_from(app_of(room), "192.0.2.50")
    for path in ("/api/auth/login", "/api/auth/token"):
        for _ in range(6):
            r = client.post(path, json={"username": "operator", "password": "guess guess guess"}, headers=headers)
            assert r.status_code == 403, r.text
            assert "another" in r.json()["detail"]
    with room.historian.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(login_throttle)).scalar_one() == 0
    assert try_login(client, "operator", PASSWORD).status_code == 200  # never throttled by the forged requests
    refused = audit_rows(room, "access.refused")
    assert refused
    assert all(r.source_ip == "192.0.2.50" for r in refused)


def test_a_form_or_text_body_cannot_log_in(room: ControlRoom) -> None:
    """A cross-site HTML form can only send text/plain or form bodies: the login refuses both (415)."""
    client = TestClient(app_of(room))
    creds = '{"username": "operator", "password": "' + PASSWORD + '"}'
    plain = client.post("/api/auth/login", content=creds, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    form = client.post("/api/auth/login", data={"username": "operator", "password": PASSWORD})
    assert form.status_code == 415
    token_plain = client.post("/api/auth/token", content=creds, headers={"Content-Type": "text/plain"})
    assert token_plain.status_code == 415
    # the same origin and API clients without an Origin still work
    assert try_login(client, "operator", PASSWORD, Origin="http://testserver").status_code == 200
    assert client.post("/api/auth/token", data={"username": "operator", "password": PASSWORD}).status_code == 200


# -- item 1: rate limits and bounded hashing --------------------------------------------------------------
def test_logins_are_rate_limited_per_source_with_retry_after(room: ControlRoom) -> None:
    app = app_of(room, login=LoginLimits())  # the production defaults
    noisy, other = client_from(app, "203.0.113.30"), client_from(app, "10.0.0.8")
    codes = [try_login(noisy, f"user{k}", "guess guess guess").status_code for k in range(15)]
    limits = LoginLimits()
    assert codes[: limits.per_source_burst] == [401] * limits.per_source_burst
    assert codes[limits.per_source_burst :] == [429] * (15 - limits.per_source_burst)
    retry = try_login(noisy, "operator", PASSWORD)
    assert retry.status_code == 429
    assert int(retry.headers["Retry-After"]) in range(1, 61)
    assert try_login(other, "operator", PASSWORD).status_code == 200


def test_the_overall_limit_holds_against_many_sources(room: ControlRoom) -> None:
    app = app_of(room, login=LoginLimits(overall_burst=5, overall_per_minute=6))
    codes = [try_login(client_from(app, f"198.18.0.{k}"), "someone", "guess guess guess").status_code for k in range(9)]
    assert codes == [401] * 5 + [429] * 4


def test_at_most_the_configured_hashes_run_and_wait() -> None:
    gate = LoginGate(LoginLimits(concurrent_hashes=1, queue=2, per_source_burst=100, overall_burst=100))
    running = peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def slow_hash() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(10)
        with lock:
            running -= 1

    import asyncio

    async def flood() -> list[object]:
        tasks = [asyncio.ensure_future(gate.run(slow_hash)) for _ in range(10)]
        await asyncio.sleep(0.2)
        in_flight = gate.in_flight
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [in_flight, *results]

    try:
        in_flight, *results = asyncio.run(flood())
    finally:
        gate.close()
    assert in_flight == 3  # one hashing, two waiting
    assert peak == 1
    refused = [r for r in results if isinstance(r, ThrottledError)]
    assert len(refused) == 7
    assert all(r.retry_after_s >= 1 for r in refused)


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.slow
def test_a_login_flood_leaves_the_cycle_and_the_read_endpoints_alone(tmp_path: Path) -> None:
    """200 concurrent logins with unknown names from 50 addresses, against `opendso run` with production hashing.

    Before: 2.4 GB, a real login in 8 s, cycle overruns, /api/status up to 65 s. The margins
    below are generous for a loaded 2-core machine and far from those figures.
    """
    process = ControlRoomProcess(
        _cached_grid("demo"),
        tmp_path / "run",
        port=0,
        period_s=1.0,
        admin_password="first admin password",
        service_settings=ServiceSettings(),  # production argon2 cost and login limits
    )
    with process.in_thread():
        url = process.url
        assert url is not None
        token = httpx.post(f"{url}/api/auth/token", json={"username": "admin", "password": "first admin password"})
        assert token.status_code == 200, token.text
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        with httpx.Client(base_url=url, headers=bearer, timeout=60) as reader:
            idle = [_timed(lambda: reader.get("/api/status")) for _ in range(20)]
            cycles_before = process.monitor.stats.cycles
            rss_before = _rss_mb()
            stop = threading.Event()
            during: list[float] = []
            cycle_ms: list[float] = []

            def read_status() -> None:
                while not stop.is_set():
                    during.append(_timed(lambda: reader.get("/api/status")))
                    cycle_ms.append(process.monitor.stats.last_cycle_ms)
                    time.sleep(0.05)

            watcher = threading.Thread(target=read_status)
            watcher.start()
            started = time.perf_counter()
            # the attacker is another process, as it would be: its threads must not share our interpreter
            flood = subprocess.Popen([sys.executable, "-c", FLOOD, url, "200", "50"], stdout=subprocess.PIPE, text=True)
            time.sleep(0.5)
            # a real user at another address during the flood: in, or told when to retry
            with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.1.1"), timeout=60) as console:
                t0 = time.perf_counter()
                real = console.post(
                    f"{url}/api/auth/login", json={"username": "admin", "password": "first admin password"}
                )
                real_s = time.perf_counter() - t0
            out, _ = flood.communicate(timeout=300)
            assert flood.returncode == 0
            flood_s = time.perf_counter() - started
            responses = json.loads(out)
            time.sleep(1.0)
            stop.set()
            watcher.join()
            rss_after = _rss_mb()
            overruns = process.monitor.stats.overruns
            cycles = process.monitor.stats.cycles - cycles_before
        codes = sorted({status for status, _ in responses})
    assert codes == [401, 429]
    assert all(retry is not None and int(retry) >= 1 for status, retry in responses if status == 429)
    assert real.status_code in (200, 429)
    assert real_s < 5.0  # before: 8 s
    if real.status_code == 429:
        assert int(real.headers["Retry-After"]) <= 60
    p99 = statistics.quantiles(during, n=100)[98] if len(during) >= 2 else max(during)
    assert p99 < max(1.0, 20 * statistics.median(idle)), (p99, statistics.median(idle))
    assert overruns == 0, overruns
    assert cycles >= flood_s / 1.0 - 2  # the cycle kept its period through the flood
    assert max(cycle_ms) < 1000.0
    assert rss_after - rss_before < 400, (rss_before, rss_after)


#: The attacker: N concurrent logins with unknown names from M loopback addresses; prints [[status, Retry-After], ...].
FLOOD = """
import asyncio, json, sys
import httpx

async def main(url, n, sources):
    transports = [httpx.AsyncHTTPTransport(local_address=f"127.0.0.{k + 2}") for k in range(sources)]
    clients = [httpx.AsyncClient(base_url=url, timeout=300, transport=t) for t in transports]
    async def one(k):
        r = await clients[k % sources].post(
            "/api/auth/login", json={"username": f"nobody{k}", "password": "guess guess guess"}
        )
        return [r.status_code, r.headers.get("retry-after")]
    out = await asyncio.gather(*(one(k) for k in range(n)))
    for c in clients:
        await c.aclose()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def _timed(call: Callable[[], httpx.Response]) -> float:
    t0 = time.perf_counter()
    response = call()
    assert response.status_code == 200, response.text
    return time.perf_counter() - t0


# -- item 3: refused actions are audited, aggregated ------------------------------------------------------
def test_refused_access_is_audited(room: ControlRoom) -> None:
    app = app_of(room)
    viewer = client_from(app, "192.0.2.10")
    csrf = try_login(viewer, "viewer", PASSWORD).json()["csrf_token"]
    assert viewer.post("/api/shiftlog", json={"text": "not mine"}, headers={CSRF_HEADER: csrf}).status_code == 403
    operator = client_from(app, "192.0.2.11")
    try_login(operator, "operator", PASSWORD)
    assert operator.post("/api/shiftlog", json={"text": "no csrf"}).status_code == 403
    assert operator.post("/api/shiftlog", json={"text": "x"}, headers={CSRF_HEADER: "forged"}).status_code == 403
    forger = client_from(app, "192.0.2.12")
    assert forger.get("/api/state", headers={"Authorization": "Bearer forged-token"}).status_code == 401
    token = forger.post("/api/auth/token", json={"username": "auditor", "password": PASSWORD})
    assert token.status_code == 401  # no such user
    revoked = forger.post("/api/auth/token", json={"username": "viewer", "password": PASSWORD}).json()["access_token"]
    headers = {"Authorization": f"Bearer {revoked}"}
    assert forger.post("/api/auth/logout", headers=headers).status_code == 204
    assert forger.get("/api/state", headers=headers).status_code == 401
    anonymous = client_from(app, "192.0.2.13")
    assert anonymous.get("/api/state").status_code == 401  # no token at all: not an attack, not audited
    rows = audit_rows(room, "access.refused")
    by_source = {(r.source_ip, r.actor) for r in rows}
    assert ("192.0.2.10", "viewer") in by_source
    assert ("192.0.2.11", "operator") in by_source  # the missing CSRF token (the wrong one is in its summary)
    assert ("192.0.2.12", "anonymous") in by_source
    assert not [r for r in rows if r.source_ip == "192.0.2.13"]
    details = " ".join(str(r.reason) + str(r.details) for r in rows)
    assert "may not do this" in details
    assert "CSRF" in details
    assert all(r.result == "refused" for r in rows)


def test_a_flood_of_refusals_adds_at_most_two_records_per_source_and_minute(room: ControlRoom) -> None:
    client = client_from(app_of(room), "203.0.113.99")
    for k in range(60):
        client.post("/api/auth/login", json={"username": f"spray{k}", "password": "guess guess guess"})
    security = Security(room.historian.engine, audit=room.audit, settings=FAST)
    for k in range(40):
        with pytest.raises(Exception, match=r"wrong username|too many"):
            security.authenticate(f"spray{k}", "guess guess guess", source_ip="203.0.113.99")
    failed = [r for r in audit_rows(room, "login.failed") if r.source_ip == "203.0.113.99"]
    buckets: dict[str, list[int]] = {}
    for r in failed:
        minute = r.details.get("minute") or datetime.fromtimestamp(r.ts_us // 1_000_000 // 60 * 60, UTC).isoformat()
        buckets.setdefault(minute, []).append(int(r.details.get("count", 1)))
    assert sum(sum(v) for v in buckets.values()) == 100  # every failure counted
    assert all(len(v) <= 2 for v in buckets.values())
    assert len(failed) <= 2 * len(buckets) <= 4  # the run straddles at most one minute boundary
    summaries = [r for r in failed if r.details.get("aggregated")]
    assert summaries
    # the names tried, capped at 20 per summary; every attempt used a name the 40 before it did not,
    # so a summary of n failures names min(n, 20) (a slow run may split them over two minutes)
    for summary in summaries:
        assert len(summary.details["actors"]) == min(int(summary.details["count"]), 20), summary.details
    assert max(len(s.details["actors"]) for s in summaries) == 20


# -- item 4: forwarded headers only from configured proxies ----------------------------------------------
FORGED = {"X-Forwarded-For": "203.0.113.200", "X-Forwarded-Proto": "https"}


def test_forwarded_headers_from_loopback_are_ignored_by_default(room: ControlRoom) -> None:
    with serving(app_of(room)) as url:
        r = httpx.post(f"{url}/api/auth/login", json={"username": "viewer", "password": PASSWORD}, headers=FORGED)
    assert r.status_code == 200, r.text
    assert "secure" not in r.headers["set-cookie"].lower()
    assert audit_rows(room, "login")[-1].source_ip == "127.0.0.1"


def test_forwarded_headers_from_a_trusted_proxy_are_used(room: ControlRoom) -> None:
    with serving(app_of(room, trusted_proxies=("127.0.0.1",))) as url:
        r = httpx.post(f"{url}/api/auth/login", json={"username": "viewer", "password": PASSWORD}, headers=FORGED)
    assert r.status_code == 200, r.text
    assert "secure" in r.headers["set-cookie"].lower()
    assert audit_rows(room, "login")[-1].source_ip == "203.0.113.200"

"""A tiny fake control-room backend for the web UI tests: the API contract of issue 4 with canned data.

It serves ``src/opendso/service/static`` and answers the REST and WebSocket endpoints with data
derived from a real grid (names, ids, coordinates, switches) and a deterministic fake state. Tests
push WebSocket messages through ``FakeBackend.broadcast`` and read the requests the UI sent from
``FakeBackend.requests``. The real backend (``opendso.service.app``) replaces it once it exists.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology

STATIC = Path(__file__).resolve().parents[1] / "src" / "opendso" / "service" / "static"
USERS = {"operator": ("operator", ["operator"]), "viewer": ("viewer", ["viewer"])}
SIM_START = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


@dataclass
class RecordedRequest:
    """A state-changing request the UI sent."""

    method: str
    path: str
    csrf: str | None
    body: Any


@dataclass
class FakeBackend:
    """Canned grid, state, alarms and logs, plus what the UI sent."""

    grid_json: dict[str, Any]
    state: dict[str, Any]
    elements: dict[int, dict[str, Any]]
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    sessions: dict[str, tuple[str, list[str], str]] = field(default_factory=dict)
    sockets: set[WebSocket] = field(default_factory=set)
    loop: asyncio.AbstractEventLoop | None = None

    def status(self) -> dict[str, Any]:
        """Return the /api/status document."""
        unacked = sum(1 for a in self.alarms.values() if not a["acknowledged"])
        return {
            "time": datetime.now(UTC).isoformat(),
            "simulated_time": SIM_START.isoformat(),
            "cycle_ms": 42.0,
            "observable": True,
            "telemetry": {"points": 26, "good": 25, "bad": 1},
            "alarms": {"active": len(self.alarms), "unacknowledged": unacked},
        }

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every connected WebSocket (callable from any thread)."""
        if self.loop is None:
            raise RuntimeError("server not started")
        if message.get("type") == "alarm":
            self._apply_alarm(message["event"])
        future = asyncio.run_coroutine_threadsafe(self._send_all(message), self.loop)
        future.result(timeout=5)

    async def _send_all(self, message: dict[str, Any]) -> None:
        for ws in list(self.sockets):
            try:
                await ws.send_json(message)
            except (RuntimeError, WebSocketDisconnect):
                self.sockets.discard(ws)

    def _apply_alarm(self, event: dict[str, Any]) -> None:
        if event["transition"] in ("raised", "escalated", "deescalated"):
            self.alarms[event["key"]] = {
                "key": event["key"],
                "monitor": event["monitor"],
                "channel": event["channel"],
                "condition": event["condition"],
                "severity": event["severity"],
                "priority": event["priority"],
                "value": event["value"],
                "group": event["group"],
                "since": event["time"],
                "acknowledged": False,
                "shelved_until": None,
            }
        elif event["transition"] == "cleared":
            self.alarms.pop(event["key"], None)


def _fake_state(grid: Grid, grid_json: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(4)
    nodes = grid_json["nodes"]
    u = 1.0 + 0.035 * np.sin(np.arange(len(nodes)) / 7.0) + rng.normal(0, 0.005, len(nodes))
    if len(nodes) > 10:
        u[5] = 1.072  # an overvoltage and an undervoltage, so the markers are exercised
        u[9] = 0.925
    topo = analyse_topology(grid)
    energised = topo.node_energised.copy()
    if energised.size > 40:
        energised[-12:] = False  # a de-energised pocket
    loading = rng.uniform(0.05, 0.85, len(grid_json["branches"]))
    if loading.size > 3:
        loading[3] = 1.18
    return {
        "time": SIM_START.isoformat(),
        "observable": True,
        "converged": True,
        "cycle_ms": 42.0,
        "u_pu": {str(n["id"]): round(float(v), 4) for n, v in zip(nodes, u, strict=True)},
        "energised": {str(n["id"]): bool(e) for n, e in zip(nodes, energised, strict=True)},
        "loading": {str(b["id"]): round(float(v), 3) for b, v in zip(grid_json["branches"], loading, strict=True)},
        "switches": {str(s["id"]): s["closed"] for s in grid_json["switches"]},
    }


def build_backend(grid: Grid) -> FakeBackend:
    """Return a fake backend holding ``grid``'s picture and a fake state."""
    topo = analyse_topology(grid)
    node = grid.component("node")
    xy = np.asarray(grid.node_xy, dtype=float)
    geographic = bool(xy.size) and not np.isnan(xy).any()
    if not geographic:
        xy = np.stack([np.arange(node.size) % 50, np.arange(node.size) // 50], axis=1).astype(float)
    names = grid.names_of("node")
    elements: dict[int, dict[str, Any]] = {}
    nodes = []
    for i in range(node.size):
        nid = int(node["id"][i])
        nodes.append(
            {
                "id": nid,
                "name": str(names[i]),
                "x": float(xy[i, 0]),
                "y": float(xy[i, 1]),
                "u_rated_kv": float(node["u_rated"][i]) / 1e3,
                "feeder": int(topo.node_feeder[i]),
            }
        )
        elements[nid] = {
            "component": "node",
            "name": str(names[i]),
            "kind": "node",
            "u_rated": float(node["u_rated"][i]),
        }
    branches = []
    for component in ("line", "transformer", "link"):
        array = grid.component(component)
        bnames = grid.names_of(component)
        for i in range(array.size):
            bid = int(array["id"][i])
            branches.append(
                {
                    "id": bid,
                    "name": str(bnames[i]),
                    "kind": component,
                    "from_node": int(array["from_node"][i]),
                    "to_node": int(array["to_node"][i]),
                }
            )
            elements[bid] = {"component": component, "name": str(bnames[i]), "kind": component}
    switches: list[dict[str, Any]] = [
        {
            "id": int(s["id"]),
            "name": str(grid.switch_names[k]) if grid.switch_names.size else str(s["id"]),
            "node": int(s["node"]),
            "element": int(s["element"]),
            "closed": bool(s["closed"]),
        }
        for k, s in enumerate(grid.switches)
    ]
    # open a few switches so the picture shows open points even on a grid where all are closed
    for s in switches[7::97][:4]:
        s["closed"] = False
    for s in switches:
        elements[s["id"]] = {"component": "switch", "name": s["name"], "kind": "switch"}
    grid_json = {
        "name": grid.name,
        "geographic": geographic,
        "nodes": nodes,
        "branches": branches,
        "switches": switches,
    }
    backend = FakeBackend(grid_json=grid_json, state=_fake_state(grid, grid_json), elements=elements)
    for k, n in enumerate(nodes[:3]):
        backend.events.append(
            {
                "seq": k + 1,
                "ts": (SIM_START + timedelta(minutes=k)).isoformat(),
                "actor": "system",
                "kind": "alarm.raised",
                "element": n["id"],
                "payload": {"key": f"voltage:{n['name']}", "condition": "high"},
            }
        )
    backend.events.append(
        {
            "seq": 4,
            "ts": (SIM_START + timedelta(minutes=5)).isoformat(),
            "actor": "operator",
            "kind": "shift.note",
            "element": None,
            "payload": {"text": "Feeder 2 ring open at the usual point for works on the cable."},
        }
    )
    return backend


def create_app(backend: FakeBackend, static_dir: Path = STATIC) -> FastAPI:
    """Return the FastAPI app answering the contract from ``backend``."""
    app = FastAPI(title="OpenDSO fake API (UI tests)")

    def session(request: Request, *, write: bool = False) -> tuple[str, list[str], str]:
        token = request.cookies.get("opendso_session")
        if token is None or token not in backend.sessions:
            raise HTTPException(401, "not logged in")
        user = backend.sessions[token]
        if write and request.headers.get("x-csrf-token") != user[2]:
            raise HTTPException(403, "missing or wrong CSRF token")
        return user

    async def record(request: Request) -> Any:
        raw = await request.body()
        body = (await request.json()) if raw else None
        backend.requests.append(
            RecordedRequest(request.method, request.url.path, request.headers.get("x-csrf-token"), body)
        )
        return body

    @app.post("/api/auth/login")
    async def login(request: Request, response: Response) -> dict[str, Any]:
        body = await request.json()
        user = USERS.get(body.get("username", ""))
        if user is None or user[0] != body.get("password"):
            raise HTTPException(401, "invalid username or password")
        token, csrf = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        backend.sessions[token] = (body["username"], user[1], csrf)
        response.set_cookie("opendso_session", token, httponly=True, samesite="strict")
        return {"user": body["username"], "roles": user[1], "csrf_token": csrf}

    @app.post("/api/auth/logout")
    async def logout(request: Request, response: Response) -> dict[str, Any]:
        session(request, write=True)
        backend.sessions.pop(request.cookies.get("opendso_session", ""), None)
        response.delete_cookie("opendso_session")
        return {}

    @app.get("/api/auth/me")
    async def me(request: Request) -> dict[str, Any]:
        user, roles, csrf = session(request)
        return {"user": user, "roles": roles, "csrf_token": csrf}

    @app.get("/api/grid")
    async def grid(request: Request) -> dict[str, Any]:
        session(request)
        return backend.grid_json

    @app.get("/api/grid/elements/{element_id}")
    async def element(request: Request, element_id: int) -> dict[str, Any]:
        session(request)
        if element_id not in backend.elements:
            raise HTTPException(404, f"no element with id {element_id}")
        e = backend.elements[element_id]
        points = [f"{e['name']}.u"] if e["component"] == "node" else [f"{e['name']}.i", f"{e['name']}.p"]
        return {
            "id": element_id,
            "component": e["component"],
            "name": e["name"],
            "kind": e["kind"],
            "fields": e,
            "points": points,
        }

    @app.get("/api/state")
    async def state(request: Request) -> dict[str, Any]:
        session(request)
        return backend.state

    @app.get("/api/measurements/{point}")
    async def measurements(request: Request, point: str) -> list[dict[str, Any]]:
        session(request)
        seed = sum(map(ord, point))
        return [
            {
                "ts": (SIM_START - timedelta(minutes=5 * (95 - k))).isoformat(),
                "value": round(100 + 20 * math.sin((k + seed) / 9) + 3 * math.sin(k * 1.7), 3),
                "quality": "good",
            }
            for k in range(96)
        ]

    @app.get("/api/alarms")
    async def alarms(request: Request) -> list[dict[str, Any]]:
        session(request)
        return list(backend.alarms.values())

    @app.post("/api/alarms/{key:path}/acknowledge")
    async def acknowledge(request: Request, key: str) -> dict[str, Any]:
        session(request, write=True)
        await record(request)
        if key not in backend.alarms:
            raise HTTPException(404, f"no active alarm {key}")
        backend.alarms[key]["acknowledged"] = True
        return backend.alarms[key]

    @app.post("/api/alarms/{key:path}/shelve")
    async def shelve(request: Request, key: str) -> dict[str, Any]:
        session(request, write=True)
        body = await record(request)
        if key not in backend.alarms:
            raise HTTPException(404, f"no active alarm {key}")
        backend.alarms[key]["shelved_until"] = body["until"]
        return backend.alarms[key]

    @app.get("/api/events")
    async def events(request: Request, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        session(request)
        return [e for e in backend.events if e["seq"] > after][:limit]

    @app.get("/api/shiftlog")
    async def shiftlog(request: Request) -> list[dict[str, Any]]:
        session(request)
        return [e for e in backend.events if e["kind"] == "shift.note"]

    @app.post("/api/shiftlog")
    async def add_note(request: Request) -> dict[str, Any]:
        user = session(request, write=True)
        body = await record(request)
        event = {
            "seq": len(backend.events) + 1,
            "ts": datetime.now(UTC).isoformat(),
            "actor": user[0],
            "kind": "shift.note",
            "element": None,
            "payload": {"text": body["text"]},
        }
        backend.events.append(event)
        return event

    @app.get("/api/status")
    async def status(request: Request) -> dict[str, Any]:
        session(request)
        return backend.status()

    @app.websocket("/api/stream")
    async def stream(ws: WebSocket) -> None:
        if ws.cookies.get("opendso_session") not in backend.sessions:
            await ws.close(code=4401)
            return
        await ws.accept()
        backend.loop = asyncio.get_running_loop()
        backend.sockets.add(ws)
        await ws.send_json({"type": "status", **backend.status()})
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            backend.sockets.discard(ws)

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(static_dir / "index.html")

    app.mount("/static", StaticFiles(directory=static_dir), name="static")
    return app


@contextmanager
def serve(backend: FakeBackend) -> Iterator[str]:
    """Run the fake app with uvicorn on an ephemeral loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(backend), log_level="warning", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

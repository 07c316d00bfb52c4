"""The control-room web service: REST and WebSocket API over a :class:`ControlRoom` (FastAPI).

Build it with :func:`create_app`. Authentication is a session cookie (``opendso_session``,
HttpOnly, SameSite=Strict, Secure over https) with a CSRF token for state-changing requests, or
a bearer token for API clients; every route states the permission it needs (see
:mod:`opendso.service.security`). Domain errors become HTTP errors in one place
(:func:`_install_error_handlers`); request bodies over ``max_body_bytes`` get 413 before they
are read. OpenAPI documentation is served at ``/api/docs``; the web UI, when its folder exists,
at ``/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opendso.errors import InputError
from opendso.service import schemas
from opendso.service.controlroom import ConflictError, ControlRoom, NotFoundError
from opendso.service.security import (
    CSRF_HEADER,
    SESSION_COOKIE,
    AuthError,
    ForbiddenError,
    Permission,
    Security,
    SecuritySettings,
    Session,
    UnknownUserError,
)
from opendso.store.errors import StoreUnavailableError, UnknownPointError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Most events or audit records one request returns.
MAX_PAGE = 5000


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of the web service; :meth:`from_env` reads ``OPENDSO_*`` overrides."""

    max_body_bytes: int = 1_000_000
    cookie_secure: bool | None = None  # None: Secure when the request came over https
    static_dir: Path | None = None  # None: the packaged ``static`` folder, when present
    security: SecuritySettings = field(default_factory=SecuritySettings)

    @classmethod
    def from_env(cls) -> ServiceSettings:
        """Settings with ``OPENDSO_MAX_BODY_BYTES``, ``OPENDSO_COOKIE_SECURE`` and ``OPENDSO_SESSION_HOURS`` applied."""
        secure = os.environ.get("OPENDSO_COOKIE_SECURE")
        hours = os.environ.get("OPENDSO_SESSION_HOURS")
        sec = SecuritySettings(session_ttl=timedelta(hours=float(hours))) if hours else SecuritySettings()
        return cls(
            max_body_bytes=int(os.environ.get("OPENDSO_MAX_BODY_BYTES", "1000000")),
            cookie_secure=None if secure is None else secure.lower() in ("1", "true", "yes"),
            security=sec,
        )


class _BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(self.limit)(scope, receive, send)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # no Content-Length (chunked): read up to the limit first, then hand the body on in one piece
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay({"type": "http.disconnect"}, receive), send)
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
        await self.app(scope, _replay({"type": "http.request", "body": bytes(body), "more_body": False}, receive), send)


def _replay(first: Message, receive: Receive) -> Receive:
    """Return a receive callable that yields ``first`` once, then defers to ``receive``."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body over the limit of {limit} bytes; nothing was changed"}, 413)


def _client_ip(request: Request | WebSocket) -> str | None:
    return request.client.host if request.client is not None else None


# -- dependencies ---------------------------------------------------------------------------------------
def _room(request: Request) -> ControlRoom:
    room: ControlRoom = request.app.state.room
    return room


def _security(request: Request) -> Security:
    security: Security = request.app.state.security
    return security


RoomDep = Annotated[ControlRoom, Depends(_room)]
SecurityDep = Annotated[Security, Depends(_security)]


def _token_of(headers: Any, cookies: Any) -> tuple[str | None, str]:
    """Return (token, kind): a bearer token from ``Authorization``, else the session cookie."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization header must be 'Bearer <token>'")
        return token.strip(), "bearer"
    return cookies.get(SESSION_COOKIE), "cookie"


def current_session(request: Request, security: SecurityDep) -> Session:
    """Return the caller's session (bearer token or cookie); cookie requests that change state need CSRF."""
    token, kind = _token_of(request.headers, request.cookies)
    session = security.session(token or "")
    if session.kind != kind:
        raise AuthError("this token is not valid here: use the session cookie for the web UI, bearer tokens for APIs")
    if request.method not in _SAFE_METHODS:
        security.check_csrf(session, request.headers.get(CSRF_HEADER))
    return session


CurrentSession = Annotated[Session, Depends(current_session)]


def require(permission: Permission) -> Callable[[Session], Session]:
    """Return a dependency that passes sessions whose roles grant ``permission`` and refuses others (403)."""

    def check(session: CurrentSession) -> Session:
        if session.user.must_change_password:
            raise ForbiddenError(
                f"user {session.user.username!r} must choose a new password first (POST /api/auth/password)"
            )
        if not session.user.can(permission):
            raise ForbiddenError(
                f"user {session.user.username!r} (roles: {', '.join(session.user.roles)}) "
                f"may not do this: it needs the {permission.value!r} permission"
            )
        return session

    return check


ViewSession = Annotated[Session, Depends(require(Permission.VIEW))]
ControlSession = Annotated[Session, Depends(require(Permission.CONTROL))]
AuditSession = Annotated[Session, Depends(require(Permission.READ_AUDIT))]


# -- errors -------------------------------------------------------------------------------------------
def _install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to HTTP errors: the one place where this happens."""

    def handler(status: int, headers: dict[str, str] | None = None) -> Callable[[Request, Exception], Awaitable[Any]]:
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            if status >= 500:
                log.error("event=request_failed path=%s error=%r", request.url.path, exc)
            return JSONResponse({"detail": str(exc)}, status, headers=headers)

        return handle

    app.add_exception_handler(AuthError, handler(401, {"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(ForbiddenError, handler(403))
    for missing in (NotFoundError, UnknownPointError, UnknownUserError):
        app.add_exception_handler(missing, handler(404))
    app.add_exception_handler(ConflictError, handler(409))
    app.add_exception_handler(InputError, handler(400))
    app.add_exception_handler(StoreUnavailableError, handler(503))

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError | ValidationError) else []
        findings = []
        for err in errors:
            where = ".".join(str(p) for p in err.get("loc", ()))
            findings.append({"loc": where, "type": err.get("type"), "msg": err.get("msg")})
        if any(f["type"] == "json_invalid" for f in findings):
            detail = "the request body is not valid JSON; nothing was changed"
        else:
            detail = "invalid request: " + "; ".join(f"{f['loc']}: {f['msg']}" for f in findings)
        return JSONResponse({"detail": detail, "errors": findings}, 422)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ValidationError, invalid_request)


# -- the app ------------------------------------------------------------------------------------------
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorPublic, "description": "not logged in"},
    403: {"model": schemas.ErrorPublic, "description": "the user's roles do not allow this, or CSRF token missing"},
}


def create_app(control_room: ControlRoom, settings: ServiceSettings | None = None) -> FastAPI:
    """Return the FastAPI app serving ``control_room`` (see the module docstring)."""
    settings = settings or ServiceSettings()
    app = FastAPI(
        title="OpenDSO control room",
        version="0.1.0",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        responses=_ERRORS,
    )
    app.state.room = control_room
    app.state.security = Security(control_room.historian.engine, audit=control_room.audit, settings=settings.security)
    app.state.settings = settings
    _install_error_handlers(app)
    _add_auth_routes(app, settings)
    _add_grid_routes(app, settings)
    _add_alarm_routes(app, settings)
    _add_stream(app)
    static = settings.static_dir or STATIC_DIR
    if (static / "index.html").is_file():
        _add_ui(app, static)
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    return app


def _add_ui(app: FastAPI, static: Path) -> None:
    """Serve the web UI: ``index.html`` at ``/`` and its assets under ``/static``."""
    index = static / "index.html"

    @app.get("/", include_in_schema=False)
    def ui() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static), name="static")


def _session_public(session: Session) -> schemas.SessionPublic:
    return schemas.SessionPublic(
        user=session.user.username,
        roles=list(session.user.roles),
        csrf_token=session.csrf_token if session.kind == "cookie" else None,
        password_change_required=session.user.must_change_password,
    )


def _set_cookie(response: Response, request: Request, token: str, settings: ServiceSettings, max_age: int) -> None:
    secure = settings.cookie_secure if settings.cookie_secure is not None else request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="strict", secure=secure, path="/"
    )


def _add_auth_routes(app: FastAPI, settings: ServiceSettings) -> None:
    @app.post("/api/auth/login", tags=["auth"])
    def login(
        body: schemas.Credentials, request: Request, response: Response, security: SecurityDep
    ) -> schemas.SessionPublic:
        """Log in: set the session cookie and return the user, roles and CSRF token."""
        user = security.authenticate(body.username, body.password, source_ip=_client_ip(request))
        token, session = security.open_session(user, kind="cookie", source_ip=_client_ip(request))
        _set_cookie(response, request, token, settings, int(settings.security.session_ttl.total_seconds()))
        return _session_public(session)

    @app.post("/api/auth/password", tags=["auth"])
    def change_password(
        body: schemas.PasswordChange, session: CurrentSession, request: Request, security: SecurityDep
    ) -> schemas.SessionPublic:
        """Change one's own password (needed first when ``password_change_required``); other sessions end."""
        changed = security.change_own_password(
            session, body.current_password, body.new_password, source_ip=_client_ip(request)
        )
        return _session_public(changed)

    @app.post("/api/auth/logout", status_code=204, tags=["auth"])
    def logout(session: CurrentSession, request: Request, response: Response, security: SecurityDep) -> None:
        """End the session and clear the cookie (or revoke the bearer token)."""
        security.close_session(session, source_ip=_client_ip(request))
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

    @app.get("/api/auth/me", tags=["auth"])
    def me(session: CurrentSession) -> schemas.SessionPublic:
        """The logged-in user, roles and CSRF token (none for bearer tokens)."""
        return _session_public(session)

    @app.post(
        "/api/auth/token",
        tags=["auth"],
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": schemas.Credentials.model_json_schema()},
                    "application/x-www-form-urlencoded": {"schema": schemas.Credentials.model_json_schema()},
                },
                "required": True,
            }
        },
    )
    async def token(request: Request) -> schemas.TokenPublic:
        """Issue a bearer token for an API client (JSON or form ``username``/``password``); no CSRF needed then."""
        raw = await request.body()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "application/x-www-form-urlencoded":
                form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
                data: Any = {k: v[0] for k, v in form.items() if k in ("username", "password")}
            else:
                data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestValidationError(
                [{"loc": ("body",), "type": "json_invalid", "msg": "the body is not valid JSON or form data"}]
            ) from None
        try:
            creds = schemas.Credentials.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        security: Security = request.app.state.security
        ip = _client_ip(request)
        user = await run_in_threadpool(security.authenticate, creds.username, creds.password, source_ip=ip)
        tok, session = await run_in_threadpool(security.open_session, user, kind="bearer", source_ip=ip)
        return schemas.TokenPublic(access_token=tok, expires=session.expires)


def _parse_time(value: str, name: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{name!r} is not an ISO 8601 time: {value!r}") from None
    if ts.tzinfo is None:
        raise InputError(f"{name!r} needs a time zone (e.g. {value}Z): {value!r}")
    return ts.astimezone(UTC)


def _add_grid_routes(app: FastAPI, settings: ServiceSettings) -> None:
    @app.get("/api/grid", response_model=schemas.GridPublic, tags=["grid"])
    def grid(_: ViewSession, room: RoomDep) -> JSONResponse:
        """The grid for drawing: nodes with coordinates, branches and switches."""
        return JSONResponse(room.grid_view())

    @app.get("/api/grid/elements/{element_id}", tags=["grid"])
    def element(
        element_id: Annotated[int, PathParam(ge=0, le=2**31 - 1)], _: ViewSession, room: RoomDep
    ) -> schemas.ElementPublic:
        """One element with its fields and the points that measure it; 404 for an unknown id."""
        return schemas.ElementPublic.model_validate(room.element(element_id))

    @app.get("/api/state", response_model=schemas.StatePublic, tags=["state"])
    def state(_: ViewSession, room: RoomDep, request: Request) -> Response:
        """The latest estimated state; with ``If-None-Match`` of the last ETag, 304 until the next cycle."""
        body, etag = room.state_json()
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/api/status", tags=["state"])
    def status(_: ViewSession, room: RoomDep) -> schemas.StatusPublic:
        """Cycle time, observability, telemetry health, alarm counts and the simulated clock."""
        return schemas.StatusPublic.model_validate(room.status())

    @app.get(
        "/api/measurements/{point:path}",
        response_model=list[schemas.MeasurementPublic] | list[schemas.AggregatePublic],
        tags=["measurements"],
    )
    def measurements(
        point: str,
        _: ViewSession,
        room: RoomDep,
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
        interval: Annotated[float | None, Query(gt=0, le=366 * 86400)] = None,
    ) -> JSONResponse:
        """Measurements of a point from ``from`` to ``to`` (default: the last hour); aggregates with ``interval`` s."""
        t1 = _parse_time(end, "to") if end else datetime.now(UTC)
        t0 = _parse_time(start, "from") if start else t1 - timedelta(hours=1)
        step = timedelta(seconds=interval) if interval is not None else None
        return JSONResponse(room.measurements(point, t0, t1, step))

    @app.get("/api/events", tags=["events"])
    def events(
        _: ViewSession,
        room: RoomDep,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
    ) -> list[schemas.EventPublic]:
        """Events of the event log after a sequence number, oldest first."""
        return [schemas.EventPublic.model_validate(e) for e in room.events(after, limit)]

    @app.get("/api/shiftlog", tags=["events"])
    def shiftlog(
        _: ViewSession, room: RoomDep, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
    ) -> list[schemas.EventPublic]:
        """The newest operator notes for the shift handover, oldest first."""
        return [schemas.EventPublic.model_validate(e) for e in room.shift_notes(limit)]

    @app.post("/api/shiftlog", status_code=201, tags=["events"])
    def add_note(
        body: schemas.ShiftNoteCreate, session: ControlSession, request: Request, room: RoomDep
    ) -> schemas.EventPublic:
        """Write an operator note (operator role)."""
        note = room.add_shift_note(body.text, actor=session.user.username, source_ip=_client_ip(request))
        return schemas.EventPublic.model_validate(note)

    @app.get("/api/audit", tags=["audit"])
    def audit(
        _: AuditSession,
        room: RoomDep,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
    ) -> list[schemas.AuditRecordPublic]:
        """Records of the audit trail after a sequence number (security auditor only)."""
        return [schemas.AuditRecordPublic.model_validate(r.to_dict()) for r in room.audit.read(after, limit=limit)]


def _add_alarm_routes(app: FastAPI, settings: ServiceSettings) -> None:
    del settings

    @app.get("/api/alarms", tags=["alarms"])
    def alarms(_: ViewSession, room: RoomDep) -> list[schemas.AlarmPublic]:
        """The alarm list, most urgent first (shelved alarms included, with ``shelved_until``)."""
        return [schemas.AlarmPublic.model_validate(a) for a in room.alarms()]

    @app.post("/api/alarms/{key:path}/acknowledge", tags=["alarms"])
    def acknowledge(key: str, session: ControlSession, request: Request, room: RoomDep) -> schemas.AlarmEventPublic:
        """Acknowledge an alarm (operator role); 404 for an unknown key, 409 when it is not in the list."""
        event = room.acknowledge(key, actor=session.user.username, source_ip=_client_ip(request))
        return schemas.AlarmEventPublic.model_validate(event.to_dict())

    @app.post("/api/alarms/{key:path}/shelve", tags=["alarms"])
    def shelve(
        key: str, body: schemas.ShelveCreate, session: ControlSession, request: Request, room: RoomDep
    ) -> schemas.AlarmEventPublic:
        """Shelve an alarm until a time, with a reason (operator role)."""
        event = room.shelve(
            key, until=body.until, reason=body.reason, actor=session.user.username, source_ip=_client_ip(request)
        )
        return schemas.AlarmEventPublic.model_validate(event.to_dict())


def _add_stream(app: FastAPI) -> None:
    @app.websocket("/api/stream")
    async def stream(websocket: WebSocket) -> None:
        """Push ``state``, ``alarm`` and ``status`` messages (session cookie or bearer token; view permission)."""
        security: Security = websocket.app.state.security
        room: ControlRoom = websocket.app.state.room
        origin = websocket.headers.get("origin")
        host = websocket.headers.get("host")
        if origin and host and origin.split("://", 1)[-1] != host:
            log.warning("event=stream_refused reason=cross_origin origin=%s", origin)
            await websocket.close(code=1008)
            return
        try:
            token, kind = _token_of(websocket.headers, websocket.cookies)
            session = await run_in_threadpool(security.session, token or "")
            if session.kind != kind or session.user.must_change_password or not session.user.can(Permission.VIEW):
                raise AuthError("not allowed")
        except AuthError:
            await websocket.close(code=1008)
            return
        await websocket.accept()
        queue = room.subscribe()
        body, _ = room.state_json()

        async def pump() -> None:
            await websocket.send_text('{"type":"state",' + body.decode()[1:])
            await websocket.send_json({"type": "status", **room.status()})
            while True:
                await websocket.send_text(await queue.get())

        sender = asyncio.create_task(pump())
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            # a client that leaves while a message is on its way is no error of ours
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
                await sender
            room.unsubscribe(queue)


__all__ = ["ServiceSettings", "create_app", "current_session", "require"]

"""The control-room web service: REST and WebSocket API over a :class:`ControlRoom` (FastAPI).

Build it with :func:`create_app`. Authentication is a session cookie (``opendso_session``,
HttpOnly, SameSite=Strict, Secure over https) with a CSRF token for state-changing requests, or
a bearer token for API clients; every route states the permission it needs (see
:mod:`opendso.service.security`). Domain errors become HTTP errors in one place
(:func:`_install_error_handlers`), where refused access (403, a wrong or missing CSRF token, a
forged, revoked or expired token) is also audited, aggregated per source and minute. Request
bodies over ``max_body_bytes`` get 413 before they are read.

Hardening:

- Requests that hash a password (login, token, password changes, user management) pass the
  :class:`~opendso.service.login_gate.LoginGate` (rate limits per source and overall, 429 with
  ``Retry-After``; bounded, low-priority hashing), and login requests from a foreign origin
  (``Origin`` or ``Sec-Fetch-Site`` of another site) are refused, as are bodies that are not
  JSON (or a form, for the OAuth2 token endpoint), so another site cannot log a browser in or
  throttle its user.
- The source address is the peer's; ``X-Forwarded-For``/``-Proto`` are believed only from
  the proxies named in ``trusted_proxies`` (none by default), so no local process can write
  another address into the audit trail or switch on ``Secure`` cookies.
- Every response carries a Content-Security-Policy without inline script and with
  ``frame-ancestors 'none'``, ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer`` and, over https, HSTS. The OpenAPI documentation at
  ``/api/docs`` is served with Swagger UI's assets from this service (fastapi-offline's copy).
- A WebSocket stream is closed (code 1008) within a second of its session ending: logout,
  expiry, disabling the user or changing its roles or password, also from another process.
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
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from opendso.errors import InputError
from opendso.service import schemas
from opendso.service.audit import integrity_report
from opendso.service.controlroom import ConflictError, ControlRoom, NotFoundError
from opendso.service.login_gate import LoginGate, LoginLimits
from opendso.service.security import (
    CSRF_HEADER,
    SESSION_COOKIE,
    AuthError,
    ForbiddenError,
    Permission,
    Security,
    SecuritySettings,
    Session,
    ThrottledError,
    UnknownUserError,
)
from opendso.store.errors import StoreUnavailableError, UnknownPointError
from opendso.store.integrity import IntegrityError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Most events or audit records one request returns.
MAX_PAGE = 5000
#: Largest sequence number a query may name (the databases' signed 64-bit integer, minus one for ``after + 1``).
MAX_SEQ = 2**63 - 2


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of the web service; :meth:`from_env` reads ``OPENDSO_*`` overrides."""

    max_body_bytes: int = 1_000_000
    cookie_secure: bool | None = None  # None: Secure when the request came over https
    static_dir: Path | None = None  # None: the packaged ``static`` folder, when present
    security: SecuritySettings = field(default_factory=SecuritySettings)
    login: LoginLimits = field(default_factory=LoginLimits)
    #: addresses of reverse proxies whose X-Forwarded-For/-Proto are believed (none by default)
    trusted_proxies: tuple[str, ...] = ()
    #: how often open WebSocket streams are checked against the sessions table (s)
    session_watch_s: float = 0.25

    @classmethod
    def from_env(cls) -> ServiceSettings:
        """Settings with ``OPENDSO_MAX_BODY_BYTES``, ``OPENDSO_COOKIE_SECURE``, ``OPENDSO_SESSION_HOURS`` and
        ``OPENDSO_TRUSTED_PROXIES`` (comma-separated addresses) applied."""
        secure = os.environ.get("OPENDSO_COOKIE_SECURE")
        hours = os.environ.get("OPENDSO_SESSION_HOURS")
        sec = SecuritySettings(session_ttl=timedelta(hours=float(hours))) if hours else SecuritySettings()
        proxies = tuple(p.strip() for p in os.environ.get("OPENDSO_TRUSTED_PROXIES", "").split(",") if p.strip())
        return cls(
            max_body_bytes=int(os.environ.get("OPENDSO_MAX_BODY_BYTES", "1000000")),
            cookie_secure=None if secure is None else secure.lower() in ("1", "true", "yes"),
            security=sec,
            trusted_proxies=proxies,
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


#: The web UI's policy: its own scripts, styles and connections only; never framed.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Swagger UI sets inline styles; scripts stay strict.
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


class _SecurityHeaders:
    """ASGI middleware: the browser-hardening headers on every HTTP response (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = str(scope.get("path", "")).startswith("/api/docs")
        https = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"content-security-policy", (DOCS_CSP if docs else CSP).encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
                ]
                if https:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _client_ip(request: Request | WebSocket) -> str | None:
    return request.client.host if request.client is not None else None


def _own_origin(request: Request | WebSocket) -> str | None:
    """``scheme://host[:port]`` of this service as the request addressed it (None without a Host header)."""
    host = request.headers.get("host")
    if not host:
        return None
    scheme = "https" if request.url.scheme in ("https", "wss") else "http"
    return f"{scheme}://{host}".lower()


def check_same_origin(request: Request | WebSocket) -> None:
    """Refuse (:class:`ForbiddenError`) a browser request sent by a page of another origin.

    Browsers send ``Origin`` with every POST (and with WebSocket handshakes) and
    ``Sec-Fetch-Site`` with every request (Fetch Metadata); API clients send neither, and pass.
    """
    origin = request.headers.get("origin")
    if origin is not None and (origin == "null" or origin.lower() != _own_origin(request)):
        raise ForbiddenError(f"requests from another origin ({origin}) are refused")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        raise ForbiddenError(f"requests from another site (Sec-Fetch-Site: {site}) are refused")


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
            raise AuthError("Authorization header must be 'Bearer <token>'", presented=True)
        return token.strip(), "bearer"
    return cookies.get(SESSION_COOKIE), "cookie"


def current_session(request: Request, security: SecurityDep) -> Session:
    """Return the caller's session (bearer token or cookie); cookie requests that change state need CSRF."""
    token, kind = _token_of(request.headers, request.cookies)
    session = security.session(token or "")
    if session.kind != kind:
        raise AuthError(
            "this token is not valid here: use the session cookie for the web UI, bearer tokens for APIs",
            presented=True,
        )
    request.state.user = session.user.username
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
ManageUsersSession = Annotated[Session, Depends(require(Permission.MANAGE_USERS))]


# -- errors -------------------------------------------------------------------------------------------
class UnsupportedMediaError(InputError):
    """A body of a media type the endpoint does not take (HTTP 415)."""


def _install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to HTTP errors (the one place where this happens); audit refused access."""

    def handler(status: int, headers: dict[str, str] | None = None) -> Callable[[Request, Exception], Awaitable[Any]]:
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            if status >= 500:
                log.error("event=request_failed path=%s error=%r", request.url.path, exc)
            if status == 403 or (status == 401 and getattr(exc, "presented", False)):
                await _audit_refusal(request, status, str(exc))
            return JSONResponse({"detail": str(exc)}, status, headers=headers)

        return handle

    async def throttled(request: Request, exc: Exception) -> JSONResponse:
        retry = exc.retry_after_s if isinstance(exc, ThrottledError) else 1
        return JSONResponse({"detail": str(exc)}, 429, headers={"Retry-After": str(retry)})

    app.add_exception_handler(AuthError, handler(401, {"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(ForbiddenError, handler(403))
    app.add_exception_handler(ThrottledError, throttled)
    for missing in (NotFoundError, UnknownPointError, UnknownUserError):
        app.add_exception_handler(missing, handler(404))
    app.add_exception_handler(ConflictError, handler(409))
    app.add_exception_handler(UnsupportedMediaError, handler(415))
    app.add_exception_handler(InputError, handler(400))
    app.add_exception_handler(IntegrityError, handler(409))
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


async def _audit_refusal(request: Request | WebSocket, status: int, reason: str) -> None:
    """Audit a refused request (aggregated per source and minute; see :meth:`AuditTrail.refused`)."""
    security: Security = request.app.state.security
    actor = getattr(request.state, "user", None) or "anonymous"
    method = request.method if isinstance(request, Request) else "WS"
    try:
        await run_in_threadpool(
            security.audit.refused,
            "access.refused",
            actor=actor,
            source_ip=_client_ip(request),
            element=f"{method} {request.url.path}"[:200],
            reason=f"{status}: {reason}"[:500],
        )
    except Exception:  # the refusal stands even when it cannot be audited
        log.exception("event=refusal_not_audited path=%s", request.url.path)


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
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        responses=_ERRORS,
    )
    app.state.room = control_room
    app.state.security = Security(control_room.historian.engine, audit=control_room.audit, settings=settings.security)
    app.state.settings = settings
    app.state.gate = LoginGate(settings.login)
    app.state.watch = _SessionWatch(app.state.security, settings.session_watch_s)
    _install_error_handlers(app)
    _add_auth_routes(app, settings)
    _add_user_routes(app)
    _add_grid_routes(app, settings)
    _add_alarm_routes(app, settings)
    _add_stream(app)
    from opendso.service.trainer import add_trainer_routes  # here: the trainer module builds on this one

    add_trainer_routes(app)
    _add_docs(app)
    static = settings.static_dir or STATIC_DIR
    if (static / "index.html").is_file():
        _add_ui(app, static)
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(_SecurityHeaders)
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    return app


def close_app(app: FastAPI) -> None:
    """Release what :func:`create_app` started: the hashing workers and the pending audit summaries."""
    app.state.gate.close()
    app.state.security.audit.close()


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at ``/api/docs``, its assets served here (from fastapi-offline), started by an external script."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    page = (STATIC_DIR / "docs.html").read_text(encoding="utf-8")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> Response:
        return Response(page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/api/docs/assets", StaticFiles(directory=assets), name="docs-assets")


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


def _require_json(request: Request, *also: str) -> str:
    """The request's media type; refuse (415) anything but JSON (and ``also``)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and media not in also:
        allowed = " or ".join(("application/json", *also))
        raise UnsupportedMediaError(f"send the body as {allowed}, not {media or 'nothing'!r}")
    return media


async def _json_body(request: Request, model: type[Any], *, form: bool = False) -> Any:
    """Parse and validate a JSON (or, with ``form``, url-encoded) body into ``model``; 422 when invalid."""
    media = _require_json(request, *(["application/x-www-form-urlencoded"] if form else []))
    raw = await request.body()
    try:
        if media == "application/x-www-form-urlencoded":
            parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            data: Any = {k: v[0] for k, v in parsed.items()}
        else:
            data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestValidationError(
            [{"loc": ("body",), "type": "json_invalid", "msg": "the body is not valid JSON or form data"}]
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _gate(request: Request) -> LoginGate:
    gate: LoginGate = request.app.state.gate
    return gate


def _add_auth_routes(app: FastAPI, settings: ServiceSettings) -> None:
    credentials_body = {
        "requestBody": {
            "content": {"application/json": {"schema": schemas.Credentials.model_json_schema()}},
            "required": True,
        }
    }

    @app.post("/api/auth/login", tags=["auth"], openapi_extra=credentials_body)
    async def login(request: Request, response: Response) -> schemas.SessionPublic:
        """Log in: set the session cookie and return the user, roles and CSRF token.

        Only JSON from this origin; rate-limited per source and overall (429 with Retry-After).
        """
        check_same_origin(request)
        creds = await _json_body(request, schemas.Credentials)
        gate, security, ip = _gate(request), request.app.state.security, _client_ip(request)
        gate.admit(ip)
        user = await gate.run(security.authenticate, creds.username, creds.password, source_ip=ip)
        token, session = await run_in_threadpool(security.open_session, user, kind="cookie", source_ip=ip)
        _set_cookie(response, request, token, settings, int(settings.security.session_ttl.total_seconds()))
        return _session_public(session)

    @app.post(
        "/api/auth/password",
        tags=["auth"],
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": schemas.PasswordChange.model_json_schema()}},
                "required": True,
            }
        },
    )
    async def change_password(request: Request) -> schemas.SessionPublic:
        """Change one's own password (needed first when ``password_change_required``); other sessions end."""
        check_same_origin(request)
        security: Security = request.app.state.security
        session = await run_in_threadpool(current_session, request, security)
        body = await _json_body(request, schemas.PasswordChange)
        gate, ip = _gate(request), _client_ip(request)
        gate.admit(ip)
        changed = await gate.run(
            security.change_own_password, session, body.current_password, body.new_password, source_ip=ip
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
        """Issue a bearer token for an API client (JSON or form ``username``/``password``); no CSRF needed then.

        Refused for requests from another origin (a page elsewhere could post a form); rate-limited.
        """
        check_same_origin(request)
        creds = await _json_body(request, schemas.Credentials, form=True)
        gate, security, ip = _gate(request), request.app.state.security, _client_ip(request)
        gate.admit(ip)
        user = await gate.run(security.authenticate, creds.username, creds.password, source_ip=ip)
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
        after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
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
        after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
    ) -> list[schemas.AuditRecordPublic]:
        """Records of the audit trail after a sequence number, each checked against its keyed hash (auditor only)."""
        records = room.audit.read(after, limit=limit)
        return [
            schemas.AuditRecordPublic.model_validate({**r.to_dict(), "verified": ok})
            for r, ok in zip(records, room.audit.check(records), strict=True)
        ]

    @app.get("/api/audit/verify", tags=["audit"])
    def audit_verify(_: AuditSession, room: RoomDep) -> schemas.IntegrityPublic:
        """Check the whole audit trail, the event log and the user and session rows (as ``opendso audit verify``)."""
        room.audit.flush()
        return schemas.IntegrityPublic.model_validate(integrity_report(room.historian.engine))


def _add_alarm_routes(app: FastAPI, settings: ServiceSettings) -> None:
    """Alarm list and actions (ISA-18.2 states), areas suppressed by design, the alarm journal and its figures.

    Viewing needs the view permission; acknowledging, shelving and unshelving the control
    permission (operators); out of service and designed suppression the configure permission
    (engineers). An action that does not fit the alarm's state is 409, bad input 400/422.
    """
    del settings
    history_window = timedelta(days=366)

    def window(start: str | None, end: str | None, room: ControlRoom, default: timedelta) -> tuple[datetime, datetime]:
        t1 = _parse_time(end, "to") if end else room.alarm_time()
        t0 = _parse_time(start, "from") if start else t1 - default
        if t1 <= t0:
            raise InputError(f"'to' ({t1.isoformat()}) must be after 'from' ({t0.isoformat()})")
        if t1 - t0 > history_window:
            raise InputError(f"the window from 'from' to 'to' is at most {history_window.days} days")
        return t0, t1

    def event_public(event: Any) -> schemas.AlarmEventPublic:
        return schemas.AlarmEventPublic.model_validate(event.to_dict())

    @app.get("/api/alarms", tags=["alarms"])
    def alarms(
        _: ViewSession,
        room: RoomDep,
        response: Response,
        priority: Annotated[list[str] | None, Query(max_length=4)] = None,
        area: Annotated[list[str] | None, Query(max_length=1000)] = None,
        state: Annotated[list[str] | None, Query(max_length=6)] = None,
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
    ) -> list[schemas.AlarmPublic]:
        """The alarm list, most urgent first: standing, shelved, out-of-service and suppressed alarms.

        Filters (each may repeat): ``priority``, ``area`` (the alarm group, e.g. a feeder),
        ``state`` (``unacknowledged``, ``acknowledged``, ``returned_unacknowledged``, ``shelved``,
        ``suppressed``, ``out_of_service``), and ``from``/``to`` on the time raised. The list's
        version is in ``X-Alarm-Version``: stream messages with a larger ``v`` are newer.
        """
        version, listed = room.select_alarms(
            priorities=priority or (),
            areas=area or (),
            states=state or (),
            start=_parse_time(start, "from") if start else None,
            end=_parse_time(end, "to") if end else None,
        )
        response.headers["X-Alarm-Version"] = str(version)
        response.headers["Cache-Control"] = "no-cache"
        return [schemas.AlarmPublic.model_validate(a) for a in listed]

    @app.post("/api/alarms/acknowledge", tags=["alarms"])
    def acknowledge_many(
        body: schemas.AcknowledgeMany, session: ControlSession, request: Request, room: RoomDep
    ) -> schemas.AcknowledgedPublic:
        """Acknowledge the alarms named (those on the operator's screen; operator role).

        404 (nothing acknowledged) when a key names no alarm; alarms already acknowledged are skipped.
        """
        events, skipped = room.acknowledge_many(body.keys, actor=session.user.username, source_ip=_client_ip(request))
        return schemas.AcknowledgedPublic(acknowledged=[event_public(e) for e in events], skipped=skipped)

    @app.get("/api/alarms/areas", tags=["alarms"])
    def areas(_: ViewSession, room: RoomDep) -> list[schemas.AlarmAreaPublic]:
        """The alarm areas (groups, e.g. feeders) and which are suppressed by design, by whom and why."""
        return [schemas.AlarmAreaPublic.model_validate(a) for a in room.alarm_areas()]

    @app.post("/api/alarms/areas/{area:path}/suppress", tags=["alarms"])
    def suppress_area(
        area: str,
        body: schemas.ReasonCreate,
        session: Annotated[Session, Depends(require(Permission.CONFIGURE))],
        request: Request,
        room: RoomDep,
    ) -> schemas.AlarmAreaPublic:
        """Suppress by design every alarm of an area, with a reason (engineer role): the hook a work permit uses.

        404 for an unknown area, 409 when it is suppressed already.
        """
        done = room.suppress_area(area, reason=body.reason, actor=session.user.username, source_ip=_client_ip(request))
        return schemas.AlarmAreaPublic(suppressed=True, **done)

    @app.post("/api/alarms/areas/{area:path}/release", tags=["alarms"])
    def release_area(
        area: str,
        session: Annotated[Session, Depends(require(Permission.CONFIGURE))],
        request: Request,
        room: RoomDep,
    ) -> schemas.AlarmAreaPublic:
        """Lift an area's designed suppression (engineer role); alarms still active are announced again.

        404 for an unknown area, 409 when it is not suppressed.
        """
        room.release_area(area, actor=session.user.username, source_ip=_client_ip(request))
        return schemas.AlarmAreaPublic(area=area, suppressed=False)

    @app.get("/api/alarms/history", tags=["alarms"])
    def history(
        _: ViewSession,
        room: RoomDep,
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
        priority: Annotated[list[str] | None, Query(max_length=4)] = None,
        area: Annotated[list[str] | None, Query(max_length=1000)] = None,
        transition: Annotated[list[str] | None, Query(max_length=20)] = None,
        key: Annotated[str | None, Query(max_length=400)] = None,
        before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
    ) -> list[schemas.AlarmJournalPublic]:
        """The alarm journal from the event log, newest first (default: the last 24 hours).

        Filters: ``priority``, ``area``, ``transition`` (raised, cleared, acknowledged, shelved, ...),
        ``key``; ``before`` a sequence number pages back.
        """
        t0, t1 = window(start, end, room, timedelta(hours=24))
        entries = room.alarm_journal(
            start=t0,
            end=t1,
            priorities=priority or (),
            areas=area or (),
            transitions=transition or (),
            key=key,
            before=before,
            limit=limit,
        )
        return [schemas.AlarmJournalPublic.model_validate(e) for e in entries]

    @app.get("/api/alarms/summary", tags=["alarms"], response_model_by_alias=True)
    def summary(
        _: ViewSession,
        room: RoomDep,
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
        positions: Annotated[int, Query(ge=1, le=100)] = 1,
    ) -> schemas.AlarmSummaryPublic:
        """The ISA-18.2 alarm performance figures of a window (default: the last 24 hours).

        Annunciated alarms per operator position per 10 minutes, flood periods (more than 10 alarms
        in 10 minutes), the ten most frequent alarms, stale alarms (standing over 24 h), chattering
        alarms, the priority distribution and the present counts.
        """
        t0, t1 = window(start, end, room, timedelta(hours=24))
        return schemas.AlarmSummaryPublic.model_validate(room.alarm_summary(start=t0, end=t1, positions=positions))

    @app.post("/api/alarms/{key:path}/acknowledge", tags=["alarms"])
    def acknowledge(key: str, session: ControlSession, request: Request, room: RoomDep) -> schemas.AlarmEventPublic:
        """Acknowledge an alarm (operator role); 404 for an unknown key, 409 when it is not in the list."""
        event = room.acknowledge(key, actor=session.user.username, source_ip=_client_ip(request))
        return event_public(event)

    @app.post("/api/alarms/{key:path}/shelve", tags=["alarms"])
    def shelve(
        key: str, body: schemas.ShelveCreate, session: ControlSession, request: Request, room: RoomDep
    ) -> schemas.AlarmEventPublic:
        """Shelve an alarm that is active or unacknowledged, until a time or for ``duration_s``, with a reason.

        Operator role. At most 8 hours (400 beyond); 409 for an alarm that is normal or out of service.
        """
        event = room.shelve(
            key,
            until=body.until,
            duration_s=body.duration_s,
            reason=body.reason,
            actor=session.user.username,
            source_ip=_client_ip(request),
        )
        return event_public(event)

    @app.post("/api/alarms/{key:path}/unshelve", tags=["alarms"])
    def unshelve(
        key: str,
        session: ControlSession,
        request: Request,
        room: RoomDep,
        body: schemas.OptionalReason | None = None,
    ) -> schemas.AlarmEventPublic:
        """Take an alarm off the shelf (operator role); 409 when it is not shelved. Still active: announced again."""
        events = room.unshelve(
            key, actor=session.user.username, reason=body.reason if body else None, source_ip=_client_ip(request)
        )
        return event_public(events[0])

    @app.post("/api/alarms/{key:path}/out-of-service", tags=["alarms"])
    def out_of_service(
        key: str,
        body: schemas.ReasonCreate,
        session: Annotated[Session, Depends(require(Permission.CONFIGURE))],
        request: Request,
        room: RoomDep,
    ) -> schemas.AlarmEventPublic:
        """Take an alarm out of service for maintenance, with a reason (engineer role); 409 when it is already."""
        event = room.remove_from_service(
            key, reason=body.reason, actor=session.user.username, source_ip=_client_ip(request)
        )
        return event_public(event)

    @app.post("/api/alarms/{key:path}/return-to-service", tags=["alarms"])
    def return_to_service(
        key: str,
        session: Annotated[Session, Depends(require(Permission.CONFIGURE))],
        request: Request,
        room: RoomDep,
        body: schemas.OptionalReason | None = None,
    ) -> schemas.AlarmEventPublic:
        """Return an alarm to service (engineer role); 409 when it is not out of service. Active: announced again."""
        events = room.return_to_service(
            key, actor=session.user.username, reason=body.reason if body else None, source_ip=_client_ip(request)
        )
        return event_public(events[0])


def _add_user_routes(app: FastAPI) -> None:
    """User management for security administrators and RBAC maintainers: the same rules as ``opendso users``."""

    def info(security: Security, username: str) -> schemas.UserPublic:
        found = [u for u in security.list_users() if u.user.username == username]
        if not found:
            raise UnknownUserError(f"no user named {username!r}")
        return schemas.UserPublic.model_validate(found[0].to_dict())

    @app.get("/api/users", tags=["users"])
    def list_users(_: ManageUsersSession, security: SecurityDep) -> list[schemas.UserPublic]:
        """Every user with roles, state, seal and login throttles."""
        return [schemas.UserPublic.model_validate(u.to_dict()) for u in security.list_users()]

    @app.post("/api/users", status_code=201, tags=["users"])
    async def add_user(request: Request) -> schemas.UserPublic:
        """Create a user with a password the user must replace at the first login (unless ``temporary`` is false)."""
        security: Security = request.app.state.security
        session = await run_in_threadpool(_manager, request, security)
        body = await _json_body(request, schemas.UserCreate)
        gate, ip = _gate(request), _client_ip(request)
        gate.admit(ip)
        await gate.run(
            security.add_user,
            body.username,
            body.password,
            body.roles,
            actor=session.user.username,
            must_change_password=body.temporary,
            source_ip=ip,
        )
        return await run_in_threadpool(info, security, body.username.strip())

    @app.post("/api/users/{username}/password", tags=["users"])
    async def reset_password(username: str, request: Request) -> schemas.UserPublic:
        """Set a user's password (temporary by default), ending its sessions and lifting its throttles."""
        security: Security = request.app.state.security
        session = await run_in_threadpool(_manager, request, security)
        body = await _json_body(request, schemas.PasswordReset)
        gate, ip = _gate(request), _client_ip(request)
        gate.admit(ip)
        await gate.run(
            security.set_password,
            username,
            body.password,
            actor=session.user.username,
            must_change_password=body.temporary,
            source_ip=ip,
        )
        return await run_in_threadpool(info, security, username)

    @app.post("/api/users/{username}/roles", tags=["users"])
    def set_roles(
        username: str, body: schemas.RolesUpdate, session: ManageUsersSession, request: Request, security: SecurityDep
    ) -> schemas.UserPublic:
        """Replace a user's roles (its sessions end). Nobody removes their own user management right."""
        if username == session.user.username and not any(
            r in ("security_administrator", "rbac_maintainer") for r in body.roles
        ):
            raise ConflictError("you cannot take away your own user management right: ask another administrator")
        security.set_roles(username, body.roles, actor=session.user.username, source_ip=_client_ip(request))
        return info(security, username)

    @app.post("/api/users/{username}/disable", tags=["users"])
    def disable(
        username: str, session: ManageUsersSession, request: Request, security: SecurityDep
    ) -> schemas.UserPublic:
        """Disable a user: its sessions end and its streams close. Nobody disables themselves."""
        if username == session.user.username:
            raise ConflictError("you cannot disable yourself")
        security.set_disabled(username, True, actor=session.user.username, source_ip=_client_ip(request))
        return info(security, username)

    @app.post("/api/users/{username}/enable", tags=["users"])
    def enable(
        username: str, session: ManageUsersSession, request: Request, security: SecurityDep
    ) -> schemas.UserPublic:
        """Enable a user and lift the throttles on its logins."""
        security.set_disabled(username, False, actor=session.user.username, source_ip=_client_ip(request))
        return info(security, username)

    @app.post("/api/users/{username}/unlock", tags=["users"])
    def unlock(
        username: str, session: ManageUsersSession, request: Request, security: SecurityDep
    ) -> schemas.UserPublic:
        """Lift the throttles on a user's logins from every address."""
        security.get_user(username)
        security.lift_throttles(username, actor=session.user.username, source_ip=_client_ip(request))
        return info(security, username)


def _manager(request: Request, security: Security) -> Session:
    """The session of a request that manages users (for routes that read their body themselves)."""
    return require(Permission.MANAGE_USERS)(current_session(request, security))


class _SessionWatch:
    """Closes WebSocket streams whose session ended (see the module docstring), polling all of them in one query.

    Sessions ended in this process wake it at once; those ended by another process (``opendso
    users disable``) are found by the next poll, every ``period_s``.
    """

    def __init__(self, security: Security, period_s: float) -> None:
        self.security = security
        self.period_s = period_s
        self._streams: dict[int, tuple[str, asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        security.on_sessions_ended(self._poke)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def watch(self, token_hash: str) -> tuple[int, asyncio.Event]:
        """Watch a stream's session; the event is set when it ends (call in the service's loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._wake = loop, asyncio.Event()
            self._task = loop.create_task(self._run(), name="session-watch")
        ended = asyncio.Event()
        key = id(ended)
        self._streams[key] = (token_hash, ended)
        return key, ended

    def unwatch(self, key: int) -> None:
        """Stop watching a stream."""
        self._streams.pop(key, None)

    async def _run(self) -> None:
        assert self._wake is not None
        while self._streams:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.period_s)
            self._wake.clear()
            streams = dict(self._streams)
            try:
                live = await run_in_threadpool(self.security.live_sessions, [h for h, _ in streams.values()])
            except Exception:  # the database is away: keep the streams, try again
                log.warning("event=session_watch_failed", exc_info=True)
                continue
            for token_hash, ended in streams.values():
                if token_hash not in live:
                    ended.set()
        self._task = None


def _add_stream(app: FastAPI) -> None:
    @app.websocket("/api/stream")
    async def stream(websocket: WebSocket) -> None:
        """Push ``state``, ``alarm`` and ``status`` messages (session cookie or bearer token; view permission).

        The stream is closed with code 1008 when the session ends (logout, expiry, a disabled user,
        new roles or password).
        """
        security: Security = websocket.app.state.security
        room: ControlRoom = websocket.app.state.room
        watch: _SessionWatch = websocket.app.state.watch
        try:
            check_same_origin(websocket)
            token, kind = _token_of(websocket.headers, websocket.cookies)
            session = await run_in_threadpool(security.session, token or "")
            websocket.state.user = session.user.username
            if session.kind != kind or session.user.must_change_password or not session.user.can(Permission.VIEW):
                raise ForbiddenError("this session may not open the stream")
        except (AuthError, ForbiddenError) as exc:
            log.warning("event=stream_refused reason=%r", str(exc))
            if isinstance(exc, ForbiddenError) or exc.presented:
                await _audit_refusal(websocket, 403 if isinstance(exc, ForbiddenError) else 401, str(exc))
            await websocket.close(code=1008)
            return
        await websocket.accept()
        queue = room.subscribe()
        key, ended = watch.watch(session.token_hash)
        body, _ = room.state_json()

        async def pump() -> None:
            await websocket.send_text('{"type":"state",' + body.decode()[1:])
            await websocket.send_json({"type": "status", **room.status()})
            while True:
                await websocket.send_text(await queue.get())

        async def listen() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

        tasks = [
            asyncio.create_task(pump()),
            asyncio.create_task(listen()),
            asyncio.create_task(ended.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if tasks[2] in done:
                log.info("event=stream_closed reason=session_ended user=%s", session.user.username)
                with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                    await websocket.close(code=1008, reason="session ended")
        except WebSocketDisconnect:
            pass
        finally:
            watch.unwatch(key)
            for task in tasks:
                task.cancel()
            # a client that leaves while a message is on its way is no error of ours
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
                    await task
            room.unsubscribe(queue)


__all__ = ["CSP", "ServiceSettings", "check_same_origin", "close_app", "create_app", "current_session", "require"]

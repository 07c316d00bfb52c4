"""The control-room web service: REST and WebSocket API over a :class:`ControlRoom` (FastAPI).

Build it with :func:`create_app`, which assembles the parts:

- the routers of :mod:`opendso.service.routes`, one per resource (see there how a new one is
  added), each route with its permission dependency (:mod:`opendso.service.routes.deps`);
- the error handlers (:mod:`opendso.service.error_handlers`): domain errors become HTTP errors
  in one place, where refused access (403, a wrong or missing CSRF token, a forged, revoked or
  expired token) is also audited, aggregated per source and minute;
- the middleware (:mod:`opendso.service.middleware`): request bodies over ``max_body_bytes``
  get 413 before they are read, and every response carries the hardening headers;
- ``app.state``: ``room`` (the control room), ``security`` (users and sessions), ``settings``,
  ``gate`` (the login gate), ``watch`` (the session watch of the WebSocket streams) and
  ``close`` (:func:`close_app` of this app, which :class:`~opendso.service.server.WebServer`
  calls when it stops).

Authentication is a session cookie (``opendso_session``, HttpOnly, SameSite=Strict, Secure
over https) with a CSRF token for state-changing requests, or a bearer token for API clients.

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

import functools
import logging
from typing import Any

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from opendso.service import schemas
from opendso.service.config import ServiceSettings
from opendso.service.controlroom import ControlRoom
from opendso.service.error_handlers import install_error_handlers
from opendso.service.login_gate import LoginGate
from opendso.service.middleware import CSP, BodyLimit, SecurityHeaders
from opendso.service.routes import ROUTERS
from opendso.service.routes.deps import check_same_origin, current_session, require
from opendso.service.routes.docs import STATIC_DIR
from opendso.service.routes.stream import SessionWatch
from opendso.service.routes.ui import ui_router
from opendso.service.security import Security

__all__ = ["CSP", "ServiceSettings", "check_same_origin", "close_app", "create_app", "current_session", "require"]

log = logging.getLogger(__name__)

#: Responses every route may give, documented once for the whole API.
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
    app.state.watch = SessionWatch(app.state.security, settings.session_watch_s)
    app.state.close = functools.partial(close_app, app)  # called by WebServer when it stops
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    static = settings.static_dir or STATIC_DIR
    if (static / "index.html").is_file():
        app.include_router(ui_router(static))
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    return app


def close_app(app: FastAPI) -> None:
    """Release what :func:`create_app` started: the hashing workers and the pending audit summaries."""
    app.state.gate.close()
    app.state.security.audit.close()

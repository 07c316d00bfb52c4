"""The web service's settings: :class:`ServiceSettings`; :meth:`~ServiceSettings.from_env` applies ``OPENDSO_*``.

The environment is read in one place, :mod:`opendso.settings` (its ``web`` group); the rest are
the defaults here, which code (``opendso run``, the tests) may replace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from opendso.service.login_gate import LoginLimits
from opendso.service.security import SecuritySettings
from opendso.settings import get_settings

__all__ = ["ServiceSettings"]


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
        ``OPENDSO_TRUSTED_PROXIES`` (comma-separated addresses) applied, read through :mod:`opendso.settings`
        (a wrong value is a :class:`~opendso.settings.SettingsError` naming the variable)."""
        web = get_settings().web
        hours = web.session_hours
        return cls(
            max_body_bytes=web.max_body_bytes,
            cookie_secure=web.cookie_secure,
            security=SecuritySettings(session_ttl=timedelta(hours=hours)) if hours else SecuritySettings(),
            trusted_proxies=web.trusted_proxies,
        )

"""OpenDSO's settings: every environment variable it reads, typed and checked in one place.

:func:`get_settings` returns the :class:`Settings` of the environment as it is at the call (a
test that sets a variable with ``monkeypatch.setenv`` sees it at the next call; the object is
reused only while the ``OPENDSO_*``/``XDG_*`` variables stay the same). Nothing else in OpenDSO
reads ``os.environ``. A variable with a wrong value is one :class:`SettingsError` (bad input: exit
status 2 on the command line) naming the variable, its value (never a password's) and what is
wrong with it. An empty variable counts as unset, except ``OPENDSO_CACHE_DIR`` (empty: no cache).

The settings are grouped by what they configure (one :class:`~pydantic_settings.BaseSettings`
per group, each with its ``OPENDSO_`` prefix); the settings dataclasses of the parts
(``ServiceSettings``, ``SyslogSettings``, ``CycleSettings``, ...) take their environment-derived
values from here:

==============================  ===============================================================
variable                        setting
==============================  ===============================================================
``OPENDSO_DATA_DIR``            ``folders.data_dir``: database, integrity key, anchors, buffers
                                (default ``$XDG_DATA_HOME/opendso``, ~/.local/share/opendso)
``OPENDSO_CACHE_DIR``           ``folders.cache_dir``: converted grids (default
                                ``$XDG_CACHE_HOME/opendso``; ``off``, ``0``, ``no``, ``false`` or
                                empty: no cache)
``OPENDSO_DATABASE_URL``        ``database.url`` (default: ``opendso.db`` in the data folder)
``OPENDSO_INTEGRITY_KEY``       ``database.integrity_key``: the key file (default: beside a SQLite
                                database, else in the data folder)
``OPENDSO_TEST_POSTGRES_URL``   ``database.test_postgres_url``: the PostgreSQL server of the tests
``OPENDSO_MQTT_URL``            ``mqtt.url``: the MQTT broker (default ``mqtt://127.0.0.1:1883``)
``OPENDSO_SYSLOG_URL``          ``syslog.url``: forward the audit trail (``syslog+tls://host:6514``)
``OPENDSO_SYSLOG_CA/CERT/KEY``  ``syslog.ca``, ``.cert``, ``.key``: the collector's CA, our client
                                certificate and its key
``OPENDSO_MAX_BODY_BYTES``      ``web.max_body_bytes``: largest request body (default 1,000,000)
``OPENDSO_COOKIE_SECURE``       ``web.cookie_secure``: session cookie ``Secure`` (default: when the
                                request came over https)
``OPENDSO_SESSION_HOURS``       ``web.session_hours``: session lifetime (default 12)
``OPENDSO_TRUSTED_PROXIES``     ``web.trusted_proxies``: comma-separated reverse-proxy addresses
``OPENDSO_ADMIN_PASSWORD``      ``passwords.admin_password``: the first administrator's password
``OPENDSO_PASSWORD``            ``passwords.password``: the password of ``opendso users``/``trainer``
``OPENDSO_RUN_HOST``            ``run.host``: where ``opendso run`` serves (default 127.0.0.1)
``OPENDSO_RUN_PORT``            ``run.port``: its port (default 8000; 0: any free port)
``OPENDSO_RUN_SPEED``           ``run.speed``: simulated seconds per real second (default 60)
``OPENDSO_RUN_PERIOD_S``        ``run.period_s``: the real-time cycle's period (default 2 s)
``OPENDSO_RUN_FLISR``           ``run.flisr``: FLISR after a protection trip: ``off``, ``advisory``
                                (an operator approves each plan; the default) or ``automatic``
``OPENDSO_RUN_ANM``             ``run.anm``: active network management of the DER registry's
                                flexible connections on the real-time cycle (default off)
``OPENDSO_RUN_GATE_CONFIG``     ``run.gate_config``: the safety gate's configuration file (TOML:
                                limits, feeder pairs allowed to parallel, critical switches)
``OPENDSO_OPENADR_CERT/KEY/CA`` ``openadr.cert``, ``.key``, ``.ca``: the OpenADR VTN's certificate,
                                its key and the VENs' CA (PEM; all three or none; none: demand
                                response is off, the default)
``OPENDSO_OPENADR_HOST``        ``openadr.host``: where the VTN listens (default 127.0.0.1)
``OPENDSO_OPENADR_PORT``        ``openadr.port``: its port (default 8081; 0: any free port)
``OPENDSO_OPENADR_POLL_S``      ``openadr.poll_s``: the polling interval asked of VENs (whole
                                seconds, default 10)
==============================  ===============================================================

This module sits below every other part (it imports only :mod:`opendso.errors`), so the grid,
the store and the telemetry may read their settings from it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from opendso.errors import SettingsError

__all__ = [
    "DEFAULT_TEST_POSTGRES_URL",
    "DatabaseConfig",
    "FolderConfig",
    "MqttConfig",
    "OpenAdrConfig",
    "PasswordConfig",
    "RunConfig",
    "Settings",
    "SettingsError",
    "SyslogConfig",
    "WebConfig",
    "get_settings",
    "reveal",
]

#: The PostgreSQL server the tests use when ``OPENDSO_TEST_POSTGRES_URL`` is not set.
DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: ``OPENDSO_CACHE_DIR`` values that turn the grid cache off.
CACHE_OFF = frozenset({"", "0", "off", "no", "false"})


def _config(prefix: str, **extra: Any) -> SettingsConfigDict:
    """The configuration every group shares: frozen, ``prefix`` for its variables, empty = unset."""
    config = SettingsConfigDict(
        env_prefix=prefix, env_ignore_empty=True, frozen=True, extra="ignore", validate_by_name=True
    )
    config.update(extra)  # type: ignore[typeddict-item]
    return config


class FolderConfig(BaseSettings):
    """Where OpenDSO keeps its data and its cache."""

    model_config = _config("OPENDSO_", env_ignore_empty=False)  # an empty OPENDSO_CACHE_DIR means "no cache"

    data_dir: Path | None = None
    #: the raw value: a folder, or one of :data:`CACHE_OFF` (see :meth:`cache_folder`)
    cache_dir: str | None = None
    xdg_data_home: Path | None = Field(None, validation_alias="XDG_DATA_HOME")
    xdg_cache_home: Path | None = Field(None, validation_alias="XDG_CACHE_HOME")

    @field_validator("data_dir", "xdg_data_home", "xdg_cache_home", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    def data_folder(self) -> Path:
        """OpenDSO's data folder: ``data_dir``, else ``$XDG_DATA_HOME/opendso`` (~/.local/share/opendso)."""
        if self.data_dir is not None:
            return self.data_dir.expanduser()
        return (self.xdg_data_home or Path.home() / ".local" / "share") / "opendso"

    def cache_folder(self) -> Path | None:
        """The folder for converted grids, or None when the cache is off (``cache_dir`` in :data:`CACHE_OFF`)."""
        if self.cache_dir is not None:
            return None if self.cache_dir.lower() in CACHE_OFF else Path(self.cache_dir)
        return (self.xdg_cache_home or Path.home() / ".cache") / "opendso"


class DatabaseConfig(BaseSettings):
    """The database, its integrity key, and the PostgreSQL server of the tests."""

    model_config = _config("OPENDSO_DATABASE_")

    url: str | None = Field(None, repr=False)  # None: opendso.db in the data folder; may hold a password
    integrity_key: Path | None = Field(None, validation_alias="OPENDSO_INTEGRITY_KEY")
    test_postgres_url: str = Field(DEFAULT_TEST_POSTGRES_URL, validation_alias="OPENDSO_TEST_POSTGRES_URL", repr=False)


class MqttConfig(BaseSettings):
    """The MQTT broker (None: the telemetry's default, a local Mosquitto)."""

    model_config = _config("OPENDSO_MQTT_")

    url: str | None = Field(None, repr=False)  # may hold a user name and password


class SyslogConfig(BaseSettings):
    """Forwarding of the audit trail to a syslog collector (off while ``url`` is None)."""

    model_config = _config("OPENDSO_SYSLOG_")

    url: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class WebConfig(BaseSettings):
    """The web service's overrides (the rest of its settings are ``ServiceSettings``' defaults)."""

    model_config = _config("OPENDSO_")

    max_body_bytes: int = Field(1_000_000, gt=0)
    cookie_secure: bool | None = None  # None: Secure when the request came over https
    session_hours: float | None = Field(None, gt=0)  # None: SecuritySettings' default (one shift)
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value


class PasswordConfig(BaseSettings):
    """Passwords given through the environment (kept as secrets: never in a repr or an error)."""

    model_config = _config("OPENDSO_")

    admin_password: SecretStr | None = None  # the first administrator's, for a new database
    password: SecretStr | None = None  # the user's own, for `opendso users` and `opendso trainer`


class RunConfig(BaseSettings):
    """The defaults of ``opendso run`` (and of ``opendso monitor``'s cycle period)."""

    model_config = _config("OPENDSO_RUN_")

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port
    speed: float = Field(60.0, gt=0)  # a simulated day in 24 real minutes
    period_s: float = Field(2.0, gt=0)
    flisr: Literal["off", "advisory", "automatic"] = "advisory"  # FLISR after a trip: proposals, or acting
    anm: bool = False  # active network management of the registry's flexible DER
    gate_config: Path | None = None  # the safety gate's TOML: limits, parallel pairs, critical switches

    def url(self) -> str:
        """The control room's base URL at ``host`` and ``port`` over http."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class OpenAdrConfig(BaseSettings):
    """Demand response: the OpenADR 2.0b VTN of ``opendso run`` (off while ``cert``, ``key`` and ``ca`` are unset).

    The VTN serves only over mutual TLS, so its certificate, key and the VENs' CA come together:
    one or two of them is a :class:`SettingsError` naming all three.
    """

    model_config = _config("OPENDSO_OPENADR_")

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = Field(None, validate_default=True)
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8081, ge=0, le=65535)  # 0: any free port
    poll_s: int = Field(10, ge=1, le=86_400)  # OpenADR durations are whole seconds

    @field_validator("ca")
    @classmethod
    def _all_or_none(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        given = {
            "OPENDSO_OPENADR_CERT": info.data.get("cert"),
            "OPENDSO_OPENADR_KEY": info.data.get("key"),
            "OPENDSO_OPENADR_CA": value,
        }
        missing = [name for name, path in given.items() if path is None]
        if missing and len(missing) < len(given):
            raise ValueError(
                "OPENDSO_OPENADR_CERT, OPENDSO_OPENADR_KEY and OPENDSO_OPENADR_CA are set together "
                f"(mutual TLS) or not at all; missing: {', '.join(missing)}"
            )
        return value

    @property
    def enabled(self) -> bool:
        """True when the VTN is configured (its certificate, key and CA are given)."""
        return self.cert is not None and self.key is not None and self.ca is not None


class Settings(BaseSettings):
    """All of OpenDSO's settings, one group per part; each group reads its own ``OPENDSO_*`` variables.

    ``Settings()`` reads the environment; pass groups to override them
    (``Settings(run=RunConfig(port=0))``). Prefer :func:`get_settings`, which turns a wrong
    value into one :class:`SettingsError`.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    folders: FolderConfig = Field(default_factory=FolderConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    syslog: SyslogConfig = Field(default_factory=SyslogConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    passwords: PasswordConfig = Field(default_factory=PasswordConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    openadr: OpenAdrConfig = Field(default_factory=OpenAdrConfig)

    GROUPS: ClassVar[tuple[type[BaseSettings], ...]] = (
        FolderConfig,
        DatabaseConfig,
        MqttConfig,
        SyslogConfig,
        WebConfig,
        PasswordConfig,
        RunConfig,
        OpenAdrConfig,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the arguments: the groups read the environment themselves (no ``OPENDSO_RUN='{json}'``)."""
        return (init_settings,)


def _variable(group: type[BaseSettings] | None, loc: tuple[int | str, ...]) -> str:
    """The environment variable of an error's location in ``group``."""
    name = str(loc[0]) if loc else "?"
    if group is None:
        return name
    if name not in group.model_fields:
        return name.upper()  # an alias: the variable's own name
    alias = group.model_fields[name].validation_alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{group.model_config.get('env_prefix', '')}{name}".upper()


def _is_secret(group: type[BaseSettings] | None, loc: tuple[int | str, ...]) -> bool:
    if group is None or not loc or str(loc[0]) not in group.model_fields:
        return False
    return "SecretStr" in str(group.model_fields[str(loc[0])].annotation)


def _describe(exc: ValidationError) -> str:
    """One line per wrong variable: ``NAME='value': what is wrong``."""
    group = next((g for g in Settings.GROUPS if g.__name__ == exc.title), None)
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error.get("loc", ()))
        variable = _variable(group, loc)
        shown = "" if _is_secret(group, loc) else f"={str(error.get('input'))[:200]!r}"
        lines.append(f"environment variable {variable}{shown}: {error['msg']}")
    return "; ".join(lines)


def _environment_key() -> tuple[tuple[str, str], ...]:
    """The variables the settings may read, as they are now (the key of the reuse in :func:`get_settings`)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(("OPENDSO_", "XDG_"))))


def get_settings() -> Settings:
    """Return the settings of the environment as it is now; raise :class:`SettingsError` naming a wrong variable.

    Reading the environment costs about half a millisecond; the settings object is reused
    while the ``OPENDSO_*``/``XDG_*`` variables are unchanged, so no cache has to be cleared
    when a test changes one.
    """
    try:
        return _settings_of(_environment_key())
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except _SourceError as exc:  # a variable the settings source could not decode at all
        raise SettingsError(f"environment: {exc}") from None


@functools.lru_cache(maxsize=8)
def _settings_of(environment: tuple[tuple[str, str], ...]) -> Settings:
    """The settings of one state of the environment (``environment`` is only the cache key)."""
    return Settings()


def reveal(secret: SecretStr | None) -> str | None:
    """The plain text of a secret setting (None when unset)."""
    return secret.get_secret_value() if secret is not None else None

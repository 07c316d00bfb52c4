"""One settings object: every environment variable read in one place, checked, and named when wrong."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opendso.cli import build_parser, main
from opendso.cli._common import parse_cli_time
from opendso.errors import InputError, SettingsError
from opendso.settings import RunConfig, Settings, get_settings, reveal

SRC = Path(__file__).resolve().parents[1] / "src" / "opendso"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OPENDSO_* or XDG_* variable set (the test session's own folders included)."""
    for name in list(os.environ):
        if name.upper().startswith(("OPENDSO_", "XDG_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_without_environment(clean_env: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert settings.run == RunConfig(host="127.0.0.1", port=8000, speed=60.0, period_s=2.0)
    assert settings.database.url is None
    assert settings.mqtt.url is None
    assert settings.syslog.url is None
    assert settings.web.trusted_proxies == ()
    assert settings.web.cookie_secure is None
    assert settings.passwords.admin_password is None
    assert settings.folders.data_folder() == Path.home() / ".local" / "share" / "opendso"
    assert settings.folders.cache_folder() == Path.home() / ".cache" / "opendso"


def test_the_parts_defaults_agree_with_the_settings(clean_env: pytest.MonkeyPatch) -> None:
    from opendso.demo import DEFAULT_SPEED
    from opendso.operations.cycle import CycleSettings
    from opendso.service import ServiceSettings

    settings = get_settings()
    assert CycleSettings().period_s == settings.run.period_s
    assert ServiceSettings().max_body_bytes == settings.web.max_body_bytes
    assert settings.run.speed == DEFAULT_SPEED


def test_the_environment_is_read_at_each_call(clean_env: pytest.MonkeyPatch) -> None:
    first = get_settings()
    assert get_settings() is first  # unchanged environment: the same object
    clean_env.setenv("OPENDSO_RUN_PORT", "8443")
    clean_env.setenv("OPENDSO_DATA_DIR", "~/somewhere")
    clean_env.setenv("XDG_CACHE_HOME", "/var/cache/x")
    changed = get_settings()
    assert changed.run.port == 8443
    assert changed.folders.data_folder() == Path.home() / "somewhere"
    assert changed.folders.cache_folder() == Path("/var/cache/x/opendso")
    clean_env.delenv("OPENDSO_RUN_PORT")
    assert get_settings().run.port == 8000


def test_variables_keep_their_names_and_meanings(clean_env: pytest.MonkeyPatch) -> None:
    env = {
        "OPENDSO_DATABASE_URL": "postgresql+psycopg://u:pw@db/opendso",
        "OPENDSO_INTEGRITY_KEY": "/keys/integrity.key",
        "OPENDSO_TEST_POSTGRES_URL": "postgresql+psycopg://t@db/test",
        "OPENDSO_MQTT_URL": "mqtt://broker:1884",
        "OPENDSO_SYSLOG_URL": "syslog+tls://collector:6514",
        "OPENDSO_SYSLOG_CA": "/etc/ca.pem",
        "OPENDSO_MAX_BODY_BYTES": "2048",
        "OPENDSO_COOKIE_SECURE": "yes",
        "OPENDSO_SESSION_HOURS": "8.5",
        "OPENDSO_TRUSTED_PROXIES": " 10.0.0.1, ,::1,",
        "OPENDSO_ADMIN_PASSWORD": "admin secret 123",
        "OPENDSO_PASSWORD": "my own secret 456",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    s = get_settings()
    assert s.database.url == env["OPENDSO_DATABASE_URL"]
    assert s.database.integrity_key == Path("/keys/integrity.key")
    assert s.database.test_postgres_url == env["OPENDSO_TEST_POSTGRES_URL"]
    assert s.mqtt.url == "mqtt://broker:1884"
    assert (s.syslog.url, s.syslog.ca) == ("syslog+tls://collector:6514", Path("/etc/ca.pem"))
    assert (s.web.max_body_bytes, s.web.cookie_secure, s.web.session_hours) == (2048, True, 8.5)
    assert s.web.trusted_proxies == ("10.0.0.1", "::1")
    assert reveal(s.passwords.admin_password) == "admin secret 123"
    assert reveal(s.passwords.password) == "my own secret 456"
    # passwords (and URLs that may hold one) never show in a repr
    shown = repr(s)
    for secret in ("admin secret 123", "my own secret 456", ":pw@"):
        assert secret not in shown


def test_empty_means_unset_except_for_the_cache(clean_env: pytest.MonkeyPatch) -> None:
    for name in ("OPENDSO_DATABASE_URL", "OPENDSO_DATA_DIR", "OPENDSO_RUN_PORT", "OPENDSO_MQTT_URL"):
        clean_env.setenv(name, "")
    s = get_settings()
    assert s.database.url is None
    assert s.mqtt.url is None
    assert s.run.port == 8000
    assert s.folders.data_folder() == Path.home() / ".local" / "share" / "opendso"
    for off in ("", "off", "OFF", "0", "no", "false"):
        clean_env.setenv("OPENDSO_CACHE_DIR", off)
        assert get_settings().folders.cache_folder() is None, off
    clean_env.setenv("OPENDSO_CACHE_DIR", "/tmp/grids")
    assert get_settings().folders.cache_folder() == Path("/tmp/grids")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OPENDSO_RUN_PORT", "eighty", "valid integer"),
        ("OPENDSO_RUN_PORT", "70000", "65535"),
        ("OPENDSO_RUN_SPEED", "0", "greater than 0"),
        ("OPENDSO_RUN_PERIOD_S", "-2", "greater than 0"),
        ("OPENDSO_RUN_FLISR", "yolo", "'off', 'advisory' or 'automatic'"),
        ("OPENDSO_RUN_ANM", "sometimes", "valid boolean"),
        ("OPENDSO_MAX_BODY_BYTES", "1e3x", "valid integer"),
        ("OPENDSO_SESSION_HOURS", "0", "greater than 0"),
        ("OPENDSO_COOKIE_SECURE", "maybe", "valid boolean"),
    ],
)
def test_a_wrong_value_is_one_error_naming_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert variable in message
    assert repr(value) in message
    assert says in message


def test_several_wrong_values_are_named_in_one_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENDSO_COOKIE_SECURE", "perhaps")
    clean_env.setenv("OPENDSO_SESSION_HOURS", "many")
    with pytest.raises(SettingsError, match=r"OPENDSO_COOKIE_SECURE.*OPENDSO_SESSION_HOURS"):
        get_settings()


def test_a_hostile_value_is_shown_short_and_escaped(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENDSO_RUN_PORT", "\x1b[31m" + "9" * 100_000)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert len(message) < 600
    assert "\x1b" not in message  # control characters escaped, not sent to the terminal
    assert "OPENDSO_RUN_PORT" in message


def test_the_command_line_names_a_wrong_variable_and_exits_2(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("OPENDSO_RUN_PERIOD_S", "soon")
    assert main(["grid", "list-simbench"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "OPENDSO_RUN_PERIOD_S='soon'" in captured.err
    assert captured.err.count("\n") == 1  # one line, no traceback


def test_command_line_defaults_come_from_the_settings(clean_env: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["run"])
    assert (args.host, args.port, args.speed) == ("127.0.0.1", 8000, 60.0)
    assert build_parser().parse_args(["monitor", "--grid", "demo", "--points", "p.toml"]).period == 2.0
    assert build_parser().parse_args(["trainer", "status", "--user", "u"]).url == "http://127.0.0.1:8000"
    clean_env.setenv("OPENDSO_RUN_PORT", "8001")
    clean_env.setenv("OPENDSO_RUN_SPEED", "600")
    clean_env.setenv("OPENDSO_RUN_PERIOD_S", "0.5")
    args = build_parser().parse_args(["run"])
    assert (args.port, args.speed) == (8001, 600.0)
    assert build_parser().parse_args(["monitor", "--grid", "demo", "--points", "p.toml"]).period == 0.5
    assert build_parser().parse_args(["simulate-field", "demo"]).speed == 600.0
    assert build_parser().parse_args(["trainer", "status", "--user", "u"]).url == "http://127.0.0.1:8001"
    # an explicit option still wins, and explicit settings need no environment
    assert build_parser().parse_args(["run", "--port", "0"]).port == 0
    assert build_parser(Settings(run=RunConfig(port=9000))).parse_args(["run"]).port == 9000


def test_run_config_url_brackets_an_ipv6_host() -> None:
    assert RunConfig(host="::1", port=8000).url() == "http://[::1]:8000"


def test_cli_times_need_iso_8601_and_a_naive_time_is_utc() -> None:
    assert parse_cli_time("2026-11-23T08:00+01:00", "--from") == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    assert parse_cli_time("2026-11-23T08:00Z", "--from") == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert parse_cli_time(" 2026-11-23T08:00 ", "--from") == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    for bad in ("yesterday", "", "2026-13-01T00:00Z", "08:00", "2026-11-23T08:00+25:00"):
        with pytest.raises(InputError, match="--from"):
            parse_cli_time(bad, "--from")


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = re.compile(r"os\.environ|getenv\(")
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if readers.search(line)
    ]
    assert not found, "environment read outside opendso.settings:\n" + "\n".join(found)

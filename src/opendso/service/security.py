"""Users, roles, sessions and login protection of the control-room service.

Roles are those of IEC 62351-8; each grants a set of :class:`Permission`:

============================  ==========================================================
role                          permissions
============================  ==========================================================
``viewer``                    view
``operator``                  view, control (acknowledge, shelve, commands, shift notes)
``engineer``                  view, configure
``installer``                 view, configure
``security_administrator``    view, configure, manage users
``security_auditor``          view, read the audit trail
``rbac_maintainer``           view, manage users
============================  ==========================================================

Only the operator controls: IEC 62351-8 gives the CONTROL right to the operator role alone, so
an engineer who must acknowledge alarms is given the operator role too (the first administrator
holds security_administrator, operator and engineer). Nobody may edit or delete the audit trail.

Passwords are stored as argon2id hashes. A login opens a session: a random token sent in the
``opendso_session`` cookie (HttpOnly, SameSite=Strict) or as a bearer token; only its SHA-256 is
stored, with an expiry. Cookie sessions carry a CSRF token that state-changing requests must
echo in ``X-CSRF-Token``. Five failed logins within 15 minutes lock an account for 15 minutes;
every failure is in the audit trail.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import hmac
import logging
import os
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from opendso.errors import InputError, OpenDSOError
from opendso.service.audit import AuditTrail
from opendso.store.historian import Historian
from opendso.store.security_schema import sessions, users

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
SESSION_COOKIE = "opendso_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_FAILED = "wrong username or password, or the account is locked or disabled"
MIN_PASSWORD_LENGTH = 10


class Role(enum.StrEnum):
    """Roles of IEC 62351-8."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    INSTALLER = "installer"
    SECURITY_ADMINISTRATOR = "security_administrator"
    SECURITY_AUDITOR = "security_auditor"
    RBAC_MAINTAINER = "rbac_maintainer"


class Permission(enum.StrEnum):
    """What a role allows."""

    VIEW = "view"
    CONTROL = "control"
    CONFIGURE = "configure"
    MANAGE_USERS = "manage_users"
    READ_AUDIT = "read_audit"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.VIEW}),
    Role.OPERATOR: frozenset({Permission.VIEW, Permission.CONTROL}),
    Role.ENGINEER: frozenset({Permission.VIEW, Permission.CONFIGURE}),
    Role.INSTALLER: frozenset({Permission.VIEW, Permission.CONFIGURE}),
    Role.SECURITY_ADMINISTRATOR: frozenset({Permission.VIEW, Permission.CONFIGURE, Permission.MANAGE_USERS}),
    Role.SECURITY_AUDITOR: frozenset({Permission.VIEW, Permission.READ_AUDIT}),
    Role.RBAC_MAINTAINER: frozenset({Permission.VIEW, Permission.MANAGE_USERS}),
}

ADMIN_ROLES = (Role.SECURITY_ADMINISTRATOR, Role.OPERATOR, Role.ENGINEER)


class AuthError(OpenDSOError):
    """Not authenticated: no, an unknown or an expired session, or a failed login (HTTP 401)."""


class ForbiddenError(OpenDSOError):
    """Authenticated, but the roles do not allow the action, or the CSRF token is missing (HTTP 403)."""


class UnknownUserError(InputError):
    """A user name that does not exist (``opendso users``)."""


@dataclass(frozen=True)
class SecuritySettings:
    """Session lifetimes and the lockout policy."""

    session_ttl: timedelta = timedelta(hours=12)  # one shift
    token_ttl: timedelta = timedelta(hours=12)
    max_failures: int = 5
    failure_window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)
    argon2_time_cost: int = 3  # argon2-cffi's defaults (RFC 9106 low-memory profile)
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4


@dataclass(frozen=True)
class User:
    """A user as the service sees it (never with the password hash)."""

    id: int
    username: str
    roles: tuple[Role, ...]
    disabled: bool = False
    must_change_password: bool = False  # until then the user may only change the password (and log out)

    @property
    def permissions(self) -> frozenset[Permission]:
        """Everything the user's roles allow."""
        out: set[Permission] = set()
        for role in self.roles:
            out |= ROLE_PERMISSIONS[role]
        return frozenset(out)

    def can(self, permission: Permission) -> bool:
        """Whether one of the user's roles grants ``permission``."""
        return permission in self.permissions


@dataclass(frozen=True)
class Session:
    """An open session: its user, kind (``cookie`` or ``bearer``), CSRF token and expiry."""

    user: User
    kind: str
    csrf_token: str
    expires: datetime
    token_hash: str


def parse_roles(roles: Iterable[str]) -> tuple[Role, ...]:
    """Return roles from their names; unknown names raise :class:`InputError` listing the valid ones."""
    out: list[Role] = []
    for raw in roles:
        name = str(raw).strip()
        if not name:
            continue
        try:
            role = Role(name)
        except ValueError:
            raise InputError(f"unknown role {name!r}; roles are: {', '.join(r.value for r in Role)}") from None
        if role not in out:
            out.append(role)
    if not out:
        raise InputError(f"give at least one role of: {', '.join(r.value for r in Role)}")
    return tuple(out)


def _us(when: datetime) -> int:
    return (when - _EPOCH) // _ONE_US


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def _check_username(username: str) -> str:
    name = str(username).strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InputError(f"a user name is 1 to 100 characters without spaces, got {username!r}")
    return name


class Security:
    """Users, sessions and login protection on a database (the schema must exist: see :class:`Historian`)."""

    def __init__(
        self, engine: sa.Engine, *, audit: AuditTrail | None = None, settings: SecuritySettings | None = None
    ) -> None:
        self.engine = engine
        self.audit = audit or AuditTrail(engine)
        self.settings = settings or SecuritySettings()
        s = self.settings
        self._hasher = PasswordHasher(
            time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib, parallelism=s.argon2_parallelism
        )
        # verified against for unknown users, so a login takes as long whether the user exists or not
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    # -- users ---------------------------------------------------------------------------------------
    def user_count(self) -> int:
        """Return how many users exist."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

    def add_user(
        self,
        username: str,
        password: str,
        roles: Iterable[str],
        *,
        actor: str = "opendso",
        must_change_password: bool = False,
    ) -> User:
        """Create a user; a taken name, a short password or an unknown role raise :class:`InputError`.

        ``must_change_password``: the user has to choose a new password at the first login
        (for a password someone else chose).
        """
        name = _check_username(username)
        _check_password(password)
        parsed = parse_roles(roles)
        now = _us(datetime.now(UTC))
        with self.engine.begin() as conn:
            if conn.execute(sa.select(users.c.id).where(users.c.username == name)).first() is not None:
                raise InputError(f"user {name!r} exists already")
            uid = conn.execute(
                sa.insert(users)
                .values(
                    username=name,
                    password_hash=self._hasher.hash(password),
                    roles=[r.value for r in parsed],
                    disabled=False,
                    failed_logins=0,
                    created_us=now,
                    updated_us=now,
                    must_change_password=must_change_password,
                )
                .returning(users.c.id)
            ).scalar_one()
        self.audit.append("user.add", actor=actor, element=f"user:{name}", details={"roles": [r.value for r in parsed]})
        return User(int(uid), name, parsed, must_change_password=must_change_password)

    def get_user(self, username: str) -> User:
        """Return a user by name; raise :class:`UnknownUserError`."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        if row is None:
            raise UnknownUserError(f"no user named {username!r}")
        return _user(row)

    def list_users(self) -> list[User]:
        """Return every user, by name."""
        with self.engine.connect() as conn:
            return [_user(r) for r in conn.execute(sa.select(users).order_by(users.c.username))]

    def set_password(
        self, username: str, password: str, *, actor: str = "opendso", must_change_password: bool = False
    ) -> None:
        """Set a user's password (and lift a lockout); open sessions of the user are closed."""
        _check_password(password)
        user = self.get_user(username)
        self._update(
            user,
            password_hash=self._hasher.hash(password),
            failed_logins=0,
            locked_until_us=None,
            must_change_password=must_change_password,
        )
        self._end_sessions(user.id)
        self.audit.append("user.password", actor=actor, element=f"user:{user.username}")

    def change_own_password(self, session: Session, current: str, new: str, *, source_ip: str | None = None) -> Session:
        """Change the session user's own password; return the session, now without the change requirement.

        The current password must be right (a wrong one counts as a failed login) and the new
        one must differ from it. The user's other sessions are closed; this one stays open.
        """
        user = self.authenticate(session.user.username, current, source_ip=source_ip)
        _check_password(new)
        if new == current:
            raise InputError("the new password must differ from the current one")
        self._update(user, password_hash=self._hasher.hash(new), must_change_password=False)
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(sessions).where(sessions.c.user_id == user.id, sessions.c.token_hash != session.token_hash)
            )
        self.audit.append(
            "user.password", actor=user.username, element=f"user:{user.username}", source_ip=source_ip, reason="own"
        )
        changed = User(user.id, user.username, user.roles, user.disabled, must_change_password=False)
        return Session(changed, session.kind, session.csrf_token, session.expires, session.token_hash)

    def set_roles(self, username: str, roles: Iterable[str], *, actor: str = "opendso") -> User:
        """Replace a user's roles; open sessions of the user are closed."""
        parsed = parse_roles(roles)
        user = self.get_user(username)
        self._update(user, roles=[r.value for r in parsed])
        self._end_sessions(user.id)
        self.audit.append(
            "user.roles",
            actor=actor,
            element=f"user:{user.username}",
            details={"before": [r.value for r in user.roles], "after": [r.value for r in parsed]},
        )
        return User(user.id, user.username, parsed, user.disabled, user.must_change_password)

    def set_disabled(self, username: str, disabled: bool = True, *, actor: str = "opendso") -> None:
        """Disable (or enable again) a user; disabling closes the user's sessions."""
        user = self.get_user(username)
        self._update(user, disabled=disabled)
        if disabled:
            self._end_sessions(user.id)
        self.audit.append("user.disable" if disabled else "user.enable", actor=actor, element=f"user:{user.username}")

    def _update(self, user: User, **values: Any) -> None:
        values["updated_us"] = _us(datetime.now(UTC))
        with self.engine.begin() as conn:
            conn.execute(sa.update(users).where(users.c.id == user.id).values(**values))

    def _end_sessions(self, user_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.user_id == user_id))

    # -- login ---------------------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, *, source_ip: str | None = None) -> User:
        """Check a user name and password; raise :class:`AuthError` (one message for every cause).

        Every failure is audited; the ``max_failures``-th failure within ``failure_window`` locks
        the account for ``lockout``. A success resets the failure count.
        """
        s = self.settings
        now = datetime.now(UTC)
        now_us = _us(now)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == str(username))).first()
        if row is None:
            self._verify(self._dummy_hash, password)
            self._fail(str(username)[:100], source_ip, "unknown user")
        assert row is not None
        if row.locked_until_us is not None and row.locked_until_us > now_us:
            self._verify(self._dummy_hash, password)
            self._fail(row.username, source_ip, "account locked")
        if row.disabled:
            self._verify(self._dummy_hash, password)
            self._fail(row.username, source_ip, "account disabled")
        if not self._verify(row.password_hash, password):
            window_start = now_us - s.failure_window // _ONE_US
            first = row.first_failed_us
            if first is None or first < window_start or row.failed_logins == 0:
                count, first = 1, now_us
            else:
                count = int(row.failed_logins) + 1
            locked = count >= s.max_failures
            values: dict[str, Any] = {"failed_logins": 0 if locked else count, "first_failed_us": first}
            if locked:
                values["locked_until_us"] = now_us + s.lockout // _ONE_US
            with self.engine.begin() as conn:
                conn.execute(sa.update(users).where(users.c.id == row.id).values(**values))
            if locked:
                log.warning("event=account_locked user=%s failures=%d source_ip=%s", row.username, count, source_ip)
                self.audit.append(
                    "user.locked",
                    actor="opendso",
                    element=f"user:{row.username}",
                    source_ip=source_ip,
                    reason=f"{count} failed logins within {s.failure_window}",
                    details={"until": (now + s.lockout).isoformat()},
                )
            self._fail(row.username, source_ip, "wrong password")
        if self._hasher.check_needs_rehash(row.password_hash):
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(users).where(users.c.id == row.id).values(password_hash=self._hasher.hash(password))
                )
        if row.failed_logins or row.locked_until_us is not None:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(users)
                    .where(users.c.id == row.id)
                    .values(failed_logins=0, first_failed_us=None, locked_until_us=None)
                )
        return _user(row)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _fail(self, username: str, source_ip: str | None, reason: str) -> None:
        log.warning("event=login_failed user=%s source_ip=%s reason=%s", username, source_ip, reason)
        self.audit.append(
            "login.failed",
            actor=username or "?",
            element=f"user:{username}",
            source_ip=source_ip,
            result="refused",
            reason=reason,
        )
        raise AuthError(LOGIN_FAILED)

    def open_session(self, user: User, *, kind: str = "cookie", source_ip: str | None = None) -> tuple[str, Session]:
        """Open a session (``cookie``) or issue a bearer token (``bearer``); return the token and the session."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires = now + (self.settings.session_ttl if kind == "cookie" else self.settings.token_ttl)
        digest = _hash_token(token)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.expires_us <= _us(now)))
            conn.execute(
                sa.insert(sessions).values(
                    token_hash=digest,
                    user_id=user.id,
                    kind=kind,
                    csrf_token=csrf,
                    source_ip=source_ip,
                    created_us=_us(now),
                    expires_us=_us(expires),
                )
            )
        self.audit.append(
            "login" if kind == "cookie" else "token.issued",
            actor=user.username,
            element=f"user:{user.username}",
            source_ip=source_ip,
            details={"expires": expires.isoformat()},
        )
        return token, Session(user, kind, csrf, expires, digest)

    def session(self, token: str) -> Session:
        """Return the open session of a token; raise :class:`AuthError` when there is none or it expired."""
        if not token:
            raise AuthError("not logged in")
        digest = _hash_token(token)
        query = (
            sa.select(sessions, users.c.username, users.c.roles, users.c.disabled, users.c.must_change_password)
            .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
            .where(sessions.c.token_hash == digest)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        now_us = _us(datetime.now(UTC))
        if row is None or row.expires_us <= now_us or row.disabled:
            raise AuthError("not logged in, or the session expired: log in again")
        user = User(
            int(row.user_id),
            row.username,
            tuple(Role(r) for r in row.roles),
            bool(row.disabled),
            bool(row.must_change_password),
        )
        return Session(user, row.kind, row.csrf_token, _EPOCH + int(row.expires_us) * _ONE_US, digest)

    def close_session(self, session: Session, *, source_ip: str | None = None) -> None:
        """End a session (logout) and audit it."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.token_hash == session.token_hash))
        self.audit.append(
            "logout", actor=session.user.username, element=f"user:{session.user.username}", source_ip=source_ip
        )

    @staticmethod
    def check_csrf(session: Session, header: str | None) -> None:
        """Refuse (:class:`ForbiddenError`) a cookie request whose CSRF header does not match the session's."""
        if session.kind != "cookie":
            return
        if not header or not hmac.compare_digest(header.encode(), session.csrf_token.encode()):
            raise ForbiddenError(f"missing or wrong {CSRF_HEADER} header: send the csrf_token given at login")


def _user(row: Any) -> User:
    return User(
        int(row.id), row.username, tuple(Role(r) for r in row.roles), bool(row.disabled), bool(row.must_change_password)
    )


def ensure_admin(historian: Historian, password: str | None = None) -> str | None:
    """Create the first administrator when no user exists; return its one-time password (None otherwise).

    The password is ``password``, else ``OPENDSO_ADMIN_PASSWORD``, else a random one that must
    be changed at the first login. The user is ``admin`` with roles security_administrator,
    operator and engineer.
    """
    security = Security(historian.engine)
    if security.user_count():
        return None
    secret = password or os.environ.get("OPENDSO_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    chosen = password or os.environ.get("OPENDSO_ADMIN_PASSWORD")
    # a generated password is shown once on the console: it must be replaced at the first login
    security.add_user("admin", secret, [r.value for r in ADMIN_ROLES], actor="opendso", must_change_password=not chosen)
    log.info("event=admin_created user=admin")
    return secret


def add_users_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``users`` (add, set-password, set-roles, disable, enable, list) to an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser("users", help="manage the users of the control room")
    parser.add_argument("--database-url", default=None, help="database (default: the embedded SQLite file)")
    sub = parser.add_subparsers(dest="users_action", required=True)
    add = sub.add_parser("add", help="create a user (the password is asked for, or read from OPENDSO_PASSWORD)")
    add.add_argument("username")
    add.add_argument("--roles", required=True, help=f"comma-separated roles: {', '.join(r.value for r in Role)}")
    pw = sub.add_parser("set-password", help="set a user's password (asked for, or OPENDSO_PASSWORD)")
    pw.add_argument("username")
    temporary = "a temporary password: the user must choose a new one at the next login"
    add.add_argument("--temporary", action="store_true", help=temporary)
    pw.add_argument("--temporary", action="store_true", help=temporary)
    roles = sub.add_parser("set-roles", help="replace a user's roles")
    roles.add_argument("username")
    roles.add_argument("--roles", required=True, help="comma-separated roles")
    dis = sub.add_parser("disable", help="disable a user and close their sessions")
    dis.add_argument("username")
    ena = sub.add_parser("enable", help="enable a disabled user")
    ena.add_argument("username")
    sub.add_parser("list", help="list the users and their roles")
    return parser


def _read_password() -> str:
    env = os.environ.get("OPENDSO_PASSWORD")
    if env:
        return env
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise InputError("the two passwords differ")
    return first


def users_command(args: argparse.Namespace) -> int:
    """Run ``opendso users ACTION``; bad input raises :class:`InputError` (exit status 2)."""
    historian = Historian.open(getattr(args, "database_url", None))
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    try:
        security = Security(historian.engine)
        action = args.users_action
        if action == "add":
            user = security.add_user(
                args.username, _read_password(), args.roles.split(","), actor=actor, must_change_password=args.temporary
            )
            sys.stdout.write(f"added {user.username} ({', '.join(user.roles)})\n")
        elif action == "set-password":
            security.set_password(args.username, _read_password(), actor=actor, must_change_password=args.temporary)
            sys.stdout.write(f"password of {args.username} set\n")
        elif action == "set-roles":
            user = security.set_roles(args.username, args.roles.split(","), actor=actor)
            sys.stdout.write(f"roles of {user.username}: {', '.join(user.roles)}\n")
        elif action in ("disable", "enable"):
            security.set_disabled(args.username, action == "disable", actor=actor)
            sys.stdout.write(f"{args.username} {action}d\n")
        elif action == "list":
            for u in security.list_users():
                state = (" (disabled)" if u.disabled else "") + (
                    " (temporary password)" if u.must_change_password else ""
                )
                sys.stdout.write(f"{u.username}\t{','.join(u.roles)}{state}\n")
        else:  # pragma: no cover - argparse restricts the choices
            raise InputError(f"unknown users action {action!r}")
    finally:
        historian.close()
    return 0


__all__ = [
    "ADMIN_ROLES",
    "CSRF_HEADER",
    "ROLE_PERMISSIONS",
    "SESSION_COOKIE",
    "AuthError",
    "ForbiddenError",
    "Permission",
    "Role",
    "Security",
    "SecuritySettings",
    "Session",
    "UnknownUserError",
    "User",
    "add_users_parser",
    "ensure_admin",
    "users_command",
]

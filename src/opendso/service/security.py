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

Passwords are stored as argon2id hashes and must be at least 10 characters and not easily
guessed (:func:`check_password`: zxcvbn's estimate, which knows common-password lists, must
reach 3 of 4, NIST SP 800-63B 5.1.1.2). A login opens a session: a random token sent in the
``opendso_session`` cookie (HttpOnly, SameSite=Strict) or as a bearer token; only its SHA-256 is
stored, with an expiry, sealed with the integrity key like the user rows
(:mod:`opendso.store.integrity`): a row changed in the database behind OpenDSO's back is
refused and reported. Cookie sessions carry a CSRF token that state-changing requests must echo
in ``X-CSRF-Token``.

Failed logins are throttled per (user name, source address), never per account alone: after
five failures within 15 minutes that pair waits 1 s, then 2 s, 4 s, ... up to 15 minutes
(:meth:`Security.authenticate`), so an attacker elsewhere cannot lock a user out.
``opendso users list`` shows the throttles and ``opendso users enable`` lifts them. Every
failure is audited, aggregated per source and minute so that a flood cannot fill the trail.
How many logins are hashed at once, and how often, is the web service's business
(:mod:`opendso.service.login_gate`).
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import logging
import math
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from opendso.errors import AuthError, ForbiddenError, InputError, IntegrityError, ThrottledError, UnknownUserError
from opendso.service.audit import AuditTrail
from opendso.settings import get_settings, reveal
from opendso.store.historian import Historian
from opendso.store.integrity import Sealer, sealer_of, session_row, user_row
from opendso.store.security_schema import login_throttle, sessions, users
from opendso.timeutil import from_epoch_us, to_epoch_us

log = logging.getLogger(__name__)

_ONE_US = timedelta(microseconds=1)  # durations to microseconds
SESSION_COOKIE = "opendso_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_FAILED = "wrong username or password, or the account is disabled"
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


@dataclass(frozen=True)
class SecuritySettings:
    """Session lifetimes and the login throttle."""

    session_ttl: timedelta = timedelta(hours=12)  # one shift
    token_ttl: timedelta = timedelta(hours=12)
    max_failures: int = 5  # failures of one (user, source) before it has to wait
    failure_window: timedelta = timedelta(minutes=15)  # failures older than this are forgotten
    throttle_base: timedelta = timedelta(seconds=1)  # the first wait; it doubles with each further failure
    throttle_max: timedelta = timedelta(minutes=15)
    max_tracked_unknown: int = 10_000  # (unknown user, source) pairs remembered in memory
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
class UserInfo:
    """A user as an administrator sees it: whether its row is intact and its login throttles."""

    user: User
    intact: bool = True
    throttles: tuple[LoginThrottle, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (the API's shape)."""
        u = self.user
        return {
            "username": u.username,
            "roles": [r.value for r in u.roles],
            "disabled": u.disabled,
            "password_change_required": u.must_change_password,
            "intact": self.intact,
            "throttles": [t.to_dict() for t in self.throttles],
        }


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
    return to_epoch_us(when)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: Longest password accepted (argon2 takes any length; the strength estimate is quadratic in it).
MAX_PASSWORD_LENGTH = 1024
#: The least zxcvbn score (0-4) a password needs: 3 = "safely unguessable", about 10^10 guesses.
MIN_PASSWORD_SCORE = 3


def check_password(password: str, *, username: str | None = None) -> None:
    """Refuse (:class:`InputError`) a password that is short or easily guessed, saying why.

    NIST SP 800-63B 5.1.1.2: at least :data:`MIN_PASSWORD_LENGTH` characters, checked against
    lists of common and breached passwords, dictionary words, repetition and sequences, and the
    user's own name; zxcvbn estimates the guesses needed and must score at least
    :data:`MIN_PASSWORD_SCORE`. No composition rules (they do not help).
    """
    from zxcvbn import zxcvbn

    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InputError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if "\x00" in password:
        raise InputError("a password may not contain NUL characters")
    if username and password.strip().lower() == username.lower():
        raise InputError("a password may not be the user name")
    # zxcvbn's cost grows with the length; past 100 characters a password is long enough anyway
    result = zxcvbn(password[:100], user_inputs=[username, "opendso"] if username else ["opendso"])
    if int(result["score"]) < MIN_PASSWORD_SCORE:
        feedback = result.get("feedback") or {}
        hints = [feedback.get("warning") or "", *(feedback.get("suggestions") or [])]
        why = " ".join(h for h in hints if h) or "it is easy to guess"
        raise InputError(f"this password is too easy to guess: {why}")


def _check_username(username: str) -> str:
    name = str(username).strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InputError(f"a user name is 1 to 100 characters without spaces, got {username!r}")
    return name


@dataclass(frozen=True)
class LoginThrottle:
    """Failed logins of one (user name, source address): how many, and until when it must wait."""

    username: str
    source_ip: str
    failures: int
    blocked_until: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (the API's shape)."""
        return {
            "username": self.username,
            "source_ip": self.source_ip,
            "failures": self.failures,
            "blocked_until": self.blocked_until.isoformat() if self.blocked_until is not None else None,
        }


def _throttle_delay(failures: int, settings: SecuritySettings) -> timedelta:
    """The wait after ``failures`` failed logins of one (user, source): none for the first few, then doubling."""
    over = failures - settings.max_failures
    if over < 0:
        return timedelta(0)
    seconds = settings.throttle_base.total_seconds() * (2.0 ** min(over, 30))
    return min(timedelta(seconds=seconds), settings.throttle_max)


class Security:
    """Users, sessions and login protection on a database opened with :meth:`Historian.open`."""

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
        # failed logins with user names that do not exist: kept in memory only (bounded), so a spray of
        # made-up names cannot grow the database
        self._unknown: collections.OrderedDict[tuple[str, str], tuple[int, int, int]] = collections.OrderedDict()
        self._unknown_lock = threading.Lock()
        self._ended: list[Callable[[], None]] = []

    @property
    def sealer(self) -> Sealer:
        """The integrity key and anchor of the database."""
        return sealer_of(self.engine)

    def on_sessions_ended(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever this process ends sessions (logout, disable, new roles or password)."""
        self._ended.append(callback)

    def _sessions_ended(self) -> None:
        for callback in list(self._ended):
            try:
                callback()
            except Exception:  # a listener's failure must not undo a logout
                log.exception("event=session_end_listener_failed")

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
        source_ip: str | None = None,
    ) -> User:
        """Create a user; a taken name, a weak password or an unknown role raise :class:`InputError`.

        ``must_change_password``: the user has to choose a new password at the first login
        (for a password someone else chose).
        """
        name = _check_username(username)
        check_password(password, username=name)
        parsed = parse_roles(roles)
        now = _us(datetime.now(UTC))
        digest = self._hasher.hash(password)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(users.c.id).where(users.c.username == name)).first() is not None:
                raise InputError(f"user {name!r} exists already")
            uid = conn.execute(
                sa.insert(users)
                .values(
                    username=name,
                    password_hash=digest,
                    roles=[r.value for r in parsed],
                    disabled=False,
                    created_us=now,
                    updated_us=now,
                    must_change_password=must_change_password,
                )
                .returning(users.c.id)
            ).scalar_one()
            self._seal_user(conn, int(uid))
        self.audit.append(
            "user.add",
            actor=actor,
            element=f"user:{name}",
            source_ip=source_ip,
            details={"roles": [r.value for r in parsed], "temporary_password": must_change_password},
        )
        return User(int(uid), name, parsed, must_change_password=must_change_password)

    def _seal_user(self, conn: sa.Connection, uid: int) -> None:
        """Recompute a user row's seal inside the transaction that changed it."""
        row = conn.execute(sa.select(users).where(users.c.id == uid)).one()
        conn.execute(
            sa.update(users).where(users.c.id == uid).values(mac=self.sealer.key.row_mac("users", user_row(row)))
        )

    def _checked(self, row: Any) -> User:
        """The user of a row whose seal matches; raise :class:`IntegrityError` (and report it) otherwise."""
        if not self.sealer.key.check_row("users", {**user_row(row), "mac": row.mac}):
            self._violation(f"user:{row.username}", "the users row does not match its seal (changed outside OpenDSO)")
            raise IntegrityError(
                f"user {row.username!r} was changed outside OpenDSO: refused until an administrator resets it"
            )
        return _user(row)

    def _violation(self, element: str, reason: str, source_ip: str | None = None) -> None:
        log.error("event=integrity_violation element=%s reason=%s", element, reason)
        self.audit.refused("integrity.violation", actor="opendso", element=element, reason=reason, source_ip=source_ip)

    def get_user(self, username: str) -> User:
        """Return a user by name; raise :class:`UnknownUserError`, or :class:`IntegrityError` for a tampered row."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        if row is None:
            raise UnknownUserError(f"no user named {username!r}")
        return self._checked(row)

    def list_users(self) -> list[UserInfo]:
        """Return every user with the throttles on its logins, by name; a tampered row is marked, not hidden."""
        throttles = self.throttles()
        out: list[UserInfo] = []
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.username)).all()
        for row in rows:
            intact = self.sealer.key.check_row("users", {**user_row(row), "mac": row.mac})
            out.append(
                UserInfo(
                    _user(row),
                    intact=intact,
                    throttles=tuple(t for t in throttles if t.username == row.username),
                )
            )
        return out

    def set_password(
        self,
        username: str,
        password: str,
        *,
        actor: str = "opendso",
        must_change_password: bool = False,
        source_ip: str | None = None,
    ) -> None:
        """Set a user's password (and lift its login throttles); open sessions of the user are closed.

        This is also how an administrator repairs a user row changed outside OpenDSO.
        """
        user = self._any_user(username)
        check_password(password, username=user.username)
        self._update(user, password_hash=self._hasher.hash(password), must_change_password=must_change_password)
        self._end_sessions(user.id)
        self.lift_throttles(user.username, actor=None)
        self.audit.append(
            "user.password",
            actor=actor,
            element=f"user:{user.username}",
            source_ip=source_ip,
            details={"temporary": must_change_password},
        )

    def _any_user(self, username: str) -> User:
        """A user by name even when its row fails its seal (administrators repair such rows)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        if row is None:
            raise UnknownUserError(f"no user named {username!r}")
        return _user(row)

    def change_own_password(self, session: Session, current: str, new: str, *, source_ip: str | None = None) -> Session:
        """Change the session user's own password; return the session, now without the change requirement.

        The current password must be right (a wrong one counts as a failed login) and the new
        one must differ from it and be strong enough. The user's other sessions are closed;
        this one stays open.
        """
        user = self.authenticate(session.user.username, current, source_ip=source_ip)
        check_password(new, username=user.username)
        if new == current:
            raise InputError("the new password must differ from the current one")
        self._update(user, password_hash=self._hasher.hash(new), must_change_password=False)
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(sessions).where(sessions.c.user_id == user.id, sessions.c.token_hash != session.token_hash)
            )
        self._sessions_ended()
        self.audit.append(
            "user.password", actor=user.username, element=f"user:{user.username}", source_ip=source_ip, reason="own"
        )
        changed = User(user.id, user.username, user.roles, user.disabled, must_change_password=False)
        return Session(changed, session.kind, session.csrf_token, session.expires, session.token_hash)

    def set_roles(
        self, username: str, roles: Iterable[str], *, actor: str = "opendso", source_ip: str | None = None
    ) -> User:
        """Replace a user's roles; open sessions of the user are closed."""
        parsed = parse_roles(roles)
        user = self._any_user(username)
        self._update(user, roles=[r.value for r in parsed])
        self._end_sessions(user.id)
        self.audit.append(
            "user.roles",
            actor=actor,
            element=f"user:{user.username}",
            source_ip=source_ip,
            details={"before": [r.value for r in user.roles], "after": [r.value for r in parsed]},
        )
        return User(user.id, user.username, parsed, user.disabled, user.must_change_password)

    def set_disabled(
        self, username: str, disabled: bool = True, *, actor: str = "opendso", source_ip: str | None = None
    ) -> list[LoginThrottle]:
        """Disable a user (closing its sessions), or enable it again and lift its login throttles.

        Returns the throttles that enabling lifted (none when disabling).
        """
        user = self._any_user(username)
        self._update(user, disabled=disabled)
        lifted: list[LoginThrottle] = []
        if disabled:
            self._end_sessions(user.id)
        else:
            lifted = self.lift_throttles(user.username, actor=actor, source_ip=source_ip)
        self.audit.append(
            "user.disable" if disabled else "user.enable",
            actor=actor,
            element=f"user:{user.username}",
            source_ip=source_ip,
        )
        return lifted

    def _update(self, user: User, **values: Any) -> None:
        values["updated_us"] = _us(datetime.now(UTC))
        with self.engine.begin() as conn:
            conn.execute(sa.update(users).where(users.c.id == user.id).values(**values))
            self._seal_user(conn, user.id)

    def _end_sessions(self, user_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.user_id == user_id))
        self._sessions_ended()

    # -- login throttling ----------------------------------------------------------------------------
    def throttles(self, username: str | None = None, *, now: datetime | None = None) -> list[LoginThrottle]:
        """Failed logins per (user, source address) still counted (known users; optionally one)."""
        now_us = _us(now or datetime.now(UTC))
        window = self.settings.failure_window // _ONE_US
        query = sa.select(login_throttle).where(
            sa.or_(login_throttle.c.blocked_until_us > now_us, login_throttle.c.last_failed_us > now_us - window)
        )
        if username is not None:
            query = query.where(login_throttle.c.username == username)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(login_throttle.c.username, login_throttle.c.source_ip)).all()
        return [
            LoginThrottle(
                r.username,
                r.source_ip,
                int(r.failures),
                from_epoch_us(r.blocked_until_us) if r.blocked_until_us > now_us else None,
            )
            for r in rows
        ]

    def lift_throttles(
        self, username: str, *, actor: str | None = "opendso", source_ip: str | None = None
    ) -> list[LoginThrottle]:
        """Forget a user's failed logins from every address; audited (``user.unlock``) unless ``actor`` is None."""
        lifted = [t for t in self.throttles(username) if t.blocked_until is not None]
        with self.engine.begin() as conn:
            conn.execute(sa.delete(login_throttle).where(login_throttle.c.username == username))
        if lifted and actor is not None:
            self.audit.append(
                "user.unlock",
                actor=actor,
                element=f"user:{username}",
                source_ip=source_ip,
                details={"sources": [t.source_ip for t in lifted]},
            )
        return lifted

    def _blocked_until(self, username: str, source: str, now_us: int, known: bool) -> int:
        """Microseconds since the epoch until which (user, source) must wait (0: it may try now)."""
        if not known:
            with self._unknown_lock:
                entry = self._unknown.get((username, source))
            return entry[2] if entry is not None else 0
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(login_throttle.c.blocked_until_us).where(
                    login_throttle.c.username == username, login_throttle.c.source_ip == source
                )
            ).first()
        return int(row.blocked_until_us) if row is not None else 0

    def _count_failure(self, username: str, source: str, now_us: int, known: bool) -> tuple[int, int]:
        """Count one failed login of (user, source); return (failures, blocked until in µs)."""
        s = self.settings
        window = s.failure_window // _ONE_US
        if not known:
            with self._unknown_lock:
                failures, first, _ = self._unknown.pop((username, source), (0, now_us, 0))
                failures = failures + 1 if now_us - first <= window else 1
                first = first if failures > 1 else now_us
                until = now_us + _throttle_delay(failures, s) // _ONE_US if failures >= s.max_failures else 0
                self._unknown[(username, source)] = (failures, first, until)
                while len(self._unknown) > s.max_tracked_unknown:
                    self._unknown.popitem(last=False)
            return failures, until
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    key = (login_throttle.c.username == username) & (login_throttle.c.source_ip == source)
                    row = conn.execute(sa.select(login_throttle).where(key)).first()
                    if row is None or now_us - int(row.last_failed_us) > window:
                        failures, first = 1, now_us
                    else:
                        failures, first = int(row.failures) + 1, int(row.first_failed_us)
                    until = now_us + _throttle_delay(failures, s) // _ONE_US if failures >= s.max_failures else 0
                    values = {
                        "failures": failures,
                        "first_failed_us": first,
                        "last_failed_us": now_us,
                        "blocked_until_us": until,
                    }
                    if row is None:
                        conn.execute(sa.insert(login_throttle).values(username=username, source_ip=source, **values))
                    else:
                        conn.execute(sa.update(login_throttle).where(key).values(**values))
                return failures, until
            except sa.exc.IntegrityError:  # another request inserted the row first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _forget_failures(self, username: str, source: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(login_throttle).where(
                    login_throttle.c.username == username, login_throttle.c.source_ip == source
                )
            )

    # -- login ---------------------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, *, source_ip: str | None = None) -> User:
        """Check a user name and password; raise :class:`AuthError` (one message for every cause).

        Failed logins are counted per (user name, source address): after ``max_failures`` that
        pair waits a delay that doubles with each further failure (from ``throttle_base`` up to
        ``throttle_max``); a login while it must wait is refused with :class:`ThrottledError`
        without looking at the password. Other addresses are not affected, so nobody can lock a
        user out by failing on purpose. Failures are audited, aggregated per source and minute.
        A success forgets the pair's failures.
        """
        now = datetime.now(UTC)
        now_us = _us(now)
        name = str(username)[:100]
        source = source_ip or "?"
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == name)).first()
        known = row is not None
        until = self._blocked_until(name, source, now_us, known)
        if until > now_us:
            retry = math.ceil((until - now_us) / 1e6)
            self.audit.refused(
                "login.throttled",
                actor=name or "?",
                element=f"user:{name}",
                source_ip=source_ip,
                reason=f"too many failed logins from this address: wait {retry} s",
            )
            raise ThrottledError(
                f"too many failed logins for this user from this address: try again in {retry} s", retry
            )
        if row is None:
            self._verify(self._dummy_hash, password)
            self._count_failure(name, source, now_us, known=False)
            self._fail(name, source_ip, "unknown user")
        assert row is not None
        try:
            user = self._checked(row)
        except IntegrityError:
            self._verify(self._dummy_hash, password)
            self._fail(row.username, source_ip, "user row changed outside OpenDSO")
        if user.disabled:
            self._verify(self._dummy_hash, password)
            self._fail(row.username, source_ip, "account disabled")
        if not self._verify(row.password_hash, password):
            failures, blocked = self._count_failure(row.username, source, now_us, known=True)
            if blocked > now_us and failures == self.settings.max_failures:
                log.warning("event=login_throttled user=%s source_ip=%s failures=%d", row.username, source_ip, failures)
            self._fail(row.username, source_ip, "wrong password")
        if self._hasher.check_needs_rehash(row.password_hash):
            self._update(user, password_hash=self._hasher.hash(password))
        self._forget_failures(row.username, source)
        return user

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _fail(self, username: str, source_ip: str | None, reason: str) -> NoReturn:
        log.warning("event=login_failed user=%s source_ip=%s reason=%s", username, source_ip, reason)
        self.audit.refused(
            "login.failed", actor=username or "?", element=f"user:{username}", source_ip=source_ip, reason=reason
        )
        raise AuthError(LOGIN_FAILED)

    def open_session(self, user: User, *, kind: str = "cookie", source_ip: str | None = None) -> tuple[str, Session]:
        """Open a session (``cookie``) or issue a bearer token (``bearer``); return the token and the session."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires = now + (self.settings.session_ttl if kind == "cookie" else self.settings.token_ttl)
        digest = _hash_token(token)
        row = {
            "token_hash": digest,
            "user_id": user.id,
            "kind": kind,
            "csrf_token": csrf,
            "source_ip": source_ip,
            "created_us": _us(now),
            "expires_us": _us(expires),
        }
        row["mac"] = self.sealer.key.row_mac("sessions", session_row(_Obj(row)))
        with self.engine.begin() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.expires_us <= _us(now)))
            conn.execute(sa.insert(sessions).values(**row))
        self.audit.append(
            "login" if kind == "cookie" else "token.issued",
            actor=user.username,
            element=f"user:{user.username}",
            source_ip=source_ip,
            details={"expires": expires.isoformat()},
        )
        return token, Session(user, kind, csrf, expires, digest)

    def session(self, token: str) -> Session:
        """Return the open session of a token; raise :class:`AuthError` when there is none or it expired.

        A session row or user row that does not match its seal is refused and reported as an
        integrity violation.
        """
        if not token:
            raise AuthError("not logged in")
        digest = _hash_token(token)
        with self.engine.connect() as conn:
            srow = conn.execute(sa.select(sessions).where(sessions.c.token_hash == digest)).first()
            urow = (
                conn.execute(sa.select(users).where(users.c.id == srow.user_id)).first() if srow is not None else None
            )
        now_us = _us(datetime.now(UTC))
        if srow is None or urow is None or srow.expires_us <= now_us:
            raise AuthError("not logged in, or the session expired: log in again", presented=True)
        if not self.sealer.key.check_row("sessions", {**session_row(srow), "mac": srow.mac}):
            self._violation(f"user:{urow.username}", "a session row does not match its seal (forged?)")
            raise AuthError("not logged in, or the session expired: log in again", presented=True)
        try:
            user = self._checked(urow)
        except IntegrityError:
            raise AuthError("not logged in, or the session expired: log in again", presented=True) from None
        if user.disabled:
            raise AuthError("not logged in, or the session expired: log in again", presented=True)
        return Session(user, srow.kind, srow.csrf_token, from_epoch_us(srow.expires_us), digest)

    def live_sessions(self, token_hashes: Iterable[str]) -> set[str]:
        """Which of these sessions are still open (not ended, expired or of a disabled user), in one query."""
        wanted = list(set(token_hashes))
        if not wanted:
            return set()
        now_us = _us(datetime.now(UTC))
        query = (
            sa.select(sessions.c.token_hash)
            .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
            .where(sessions.c.token_hash.in_(wanted), sessions.c.expires_us > now_us, users.c.disabled.is_(False))
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def close_session(self, session: Session, *, source_ip: str | None = None) -> None:
        """End a session (logout) and audit it."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.token_hash == session.token_hash))
        self._sessions_ended()
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


class _Obj:
    """A mapping seen through attributes (to seal a row before it is written)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


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
    chosen = password or reveal(get_settings().passwords.admin_password)
    secret = chosen or secrets.token_urlsafe(12)
    # a generated password is shown once on the console: it must be replaced at the first login
    security.add_user("admin", secret, [r.value for r in ADMIN_ROLES], actor="opendso", must_change_password=not chosen)
    log.info("event=admin_created user=admin")
    return secret


__all__ = [
    "ADMIN_ROLES",
    "CSRF_HEADER",
    "MIN_PASSWORD_LENGTH",
    "ROLE_PERMISSIONS",
    "SESSION_COOKIE",
    "AuthError",
    "ForbiddenError",
    "LoginThrottle",
    "Permission",
    "Role",
    "Security",
    "SecuritySettings",
    "Session",
    "ThrottledError",
    "UnknownUserError",
    "User",
    "UserInfo",
    "check_password",
    "ensure_admin",
]

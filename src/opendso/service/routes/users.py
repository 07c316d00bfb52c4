"""User management for security administrators and RBAC maintainers: the same rules as ``opendso users``.

=======================================  =============================================================
route (manage-users permission)          what it does
=======================================  =============================================================
``GET /api/users``                       every user with roles, state, seal and login throttles
``POST /api/users``                      create a user (temporary password unless ``temporary`` false)
``POST /api/users/{username}/password``  set a password (temporary by default); sessions end
``POST /api/users/{username}/roles``     replace the roles; sessions end (nobody drops their own
                                         user management right: 409)
``POST /api/users/{username}/disable``   disable: sessions end, streams close (not oneself: 409)
``POST /api/users/{username}/enable``    enable and lift the login throttles
``POST /api/users/{username}/unlock``    lift the login throttles from every address
=======================================  =============================================================

Creating a user and setting a password hash it: those routes read their body themselves and
pass the login gate like the login route.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from opendso.errors import ConflictError, UnknownUserError
from opendso.service import schemas
from opendso.service.routes.deps import (
    ManageUsersSession,
    SecurityDep,
    client_ip,
    current_session,
    gate_of,
    json_body,
    require,
)
from opendso.service.security import Permission, Security, Session

__all__ = ["router"]

router = APIRouter(tags=["users"])


def _info(security: Security, username: str) -> schemas.UserPublic:
    found = [u for u in security.list_users() if u.user.username == username]
    if not found:
        raise UnknownUserError(f"no user named {username!r}")
    return schemas.UserPublic.model_validate(found[0].to_dict())


def _manager(request: Request, security: Security) -> Session:
    """The session of a request that manages users (for routes that read their body themselves)."""
    return require(Permission.MANAGE_USERS)(current_session(request, security))


@router.get("/api/users")
def list_users(_: ManageUsersSession, security: SecurityDep) -> list[schemas.UserPublic]:
    """Every user with roles, state, seal and login throttles."""
    return [schemas.UserPublic.model_validate(u.to_dict()) for u in security.list_users()]


@router.post("/api/users", status_code=201)
async def add_user(request: Request) -> schemas.UserPublic:
    """Create a user with a password the user must replace at the first login (unless ``temporary`` is false)."""
    security: Security = request.app.state.security
    session = await run_in_threadpool(_manager, request, security)
    body = await json_body(request, schemas.UserCreate)
    gate, ip = gate_of(request), client_ip(request)
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
    return await run_in_threadpool(_info, security, body.username.strip())


@router.post("/api/users/{username}/password")
async def reset_password(username: str, request: Request) -> schemas.UserPublic:
    """Set a user's password (temporary by default), ending its sessions and lifting its throttles."""
    security: Security = request.app.state.security
    session = await run_in_threadpool(_manager, request, security)
    body = await json_body(request, schemas.PasswordReset)
    gate, ip = gate_of(request), client_ip(request)
    gate.admit(ip)
    await gate.run(
        security.set_password,
        username,
        body.password,
        actor=session.user.username,
        must_change_password=body.temporary,
        source_ip=ip,
    )
    return await run_in_threadpool(_info, security, username)


@router.post("/api/users/{username}/roles")
def set_roles(
    username: str, body: schemas.RolesUpdate, session: ManageUsersSession, request: Request, security: SecurityDep
) -> schemas.UserPublic:
    """Replace a user's roles (its sessions end). Nobody removes their own user management right."""
    if username == session.user.username and not any(
        r in ("security_administrator", "rbac_maintainer") for r in body.roles
    ):
        raise ConflictError("you cannot take away your own user management right: ask another administrator")
    security.set_roles(username, body.roles, actor=session.user.username, source_ip=client_ip(request))
    return _info(security, username)


@router.post("/api/users/{username}/disable")
def disable(username: str, session: ManageUsersSession, request: Request, security: SecurityDep) -> schemas.UserPublic:
    """Disable a user: its sessions end and its streams close. Nobody disables themselves."""
    if username == session.user.username:
        raise ConflictError("you cannot disable yourself")
    security.set_disabled(username, True, actor=session.user.username, source_ip=client_ip(request))
    return _info(security, username)


@router.post("/api/users/{username}/enable")
def enable(username: str, session: ManageUsersSession, request: Request, security: SecurityDep) -> schemas.UserPublic:
    """Enable a user and lift the throttles on its logins."""
    security.set_disabled(username, False, actor=session.user.username, source_ip=client_ip(request))
    return _info(security, username)


@router.post("/api/users/{username}/unlock")
def unlock(username: str, session: ManageUsersSession, request: Request, security: SecurityDep) -> schemas.UserPublic:
    """Lift the throttles on a user's logins from every address."""
    security.get_user(username)
    security.lift_throttles(username, actor=session.user.username, source_ip=client_ip(request))
    return _info(security, username)

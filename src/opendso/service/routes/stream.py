"""The live stream: ``/api/stream`` pushes ``state``, ``alarm`` and ``status`` messages over a WebSocket.

The handshake needs a session (cookie or bearer token) with the view permission, from this
origin; a refused handshake is closed with code 1008 and audited like a refused request. The
first messages are the present state and status; then every message of the control room's
fan-out (:mod:`opendso.service.controlroom.fanout`: states and status conflated, alarms in order).

:class:`SessionWatch` closes a stream (code 1008, "session ended") within a second of its
session ending: logout, expiry, a disabled user, new roles or a new password, also when another
process (``opendso users disable``) ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from opendso.errors import AuthError, ForbiddenError
from opendso.service.controlroom import ControlRoom
from opendso.service.error_handlers import audit_refusal
from opendso.service.routes.deps import check_same_origin, token_of
from opendso.service.security import Permission, Security

__all__ = ["SessionWatch", "router"]

log = logging.getLogger(__name__)

router = APIRouter()


class SessionWatch:
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


@router.websocket("/api/stream")
async def stream(websocket: WebSocket) -> None:
    """Push ``state``, ``alarm`` and ``status`` messages (session cookie or bearer token; view permission).

    The stream is closed with code 1008 when the session ends (logout, expiry, a disabled user,
    new roles or password).
    """
    security: Security = websocket.app.state.security
    room: ControlRoom = websocket.app.state.room
    watch: SessionWatch = websocket.app.state.watch
    try:
        check_same_origin(websocket)
        token, kind = token_of(websocket.headers, websocket.cookies)
        session = await run_in_threadpool(security.session, token or "")
        websocket.state.user = session.user.username
        if session.kind != kind or session.user.must_change_password or not session.user.can(Permission.VIEW):
            raise ForbiddenError("this session may not open the stream")
    except (AuthError, ForbiddenError) as exc:
        log.warning("event=stream_refused reason=%r", str(exc))
        if isinstance(exc, ForbiddenError) or exc.presented:
            await audit_refusal(websocket, 403 if isinstance(exc, ForbiddenError) else 401, str(exc))
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

"""Serving the control-room app from inside an asyncio program (uvicorn on a socket bound up front).

`opendso run` binds its port before anything else starts, so a port in use is one clear error
(:func:`bind_socket`) rather than a half-started control room; :class:`WebServer` then runs
uvicorn in the caller's event loop, leaving signal handling to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from opendso.errors import InputError

log = logging.getLogger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    """Return a listening TCP socket bound to ``host:port`` (port 0: any free port).

    Raises :class:`InputError` naming the address when it is in use or cannot be bound.
    """
    if not 0 <= port <= 65535:
        raise InputError(f"web service: port must be 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"web service: cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # the protocol must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it every response after the first on a keep-alive connection waits ~40 ms
    # (Nagle's algorithm against the client's delayed ACK)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)  # the port is ours from here on; connections wait until the service serves
    except OSError as exc:
        sock.close()
        why = "is in use (is another opendso running?)" if exc.errno == errno.EADDRINUSE else f"failed: {exc.strerror}"
        raise InputError(f"web service: binding {host}:{port} {why}; choose another with --port") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, *, tls: bool = False) -> str:
    """The base URL of a service listening on ``sock``, e.g. ``http://127.0.0.1:8000``."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_warning(host: str, tls: bool) -> str | None:
    """The warning for serving without TLS on an address other machines reach (None when fine)."""
    if tls or is_loopback(host):
        return None
    return (
        f"WARNING: the control room is served over plain HTTP on {host}: passwords, session cookies and "
        "commands cross the network unencrypted. Use --tls-cert/--tls-key, or serve on 127.0.0.1 behind a "
        "TLS-terminating proxy (--trusted-proxy)."
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the program that embeds it decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """Run ``app`` with uvicorn on ``sock`` in the running event loop (an async context manager).

    Entering starts the server and returns once it accepts connections; leaving asks it to stop,
    closes the WebSocket streams and waits (at most ``graceful_s``) for requests in flight.
    """

    def __init__(
        self,
        app: FastAPI,
        sock: socket.socket,
        *,
        graceful_s: int = 5,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.sock = sock
        if (tls_cert is None) != (tls_key is None):
            raise InputError("web service: give both --tls-cert and --tls-key, or neither")
        for name, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
            if path is not None and not path.is_file():
                raise InputError(f"web service: {name} {path} is not a readable file")
        self.tls = tls_cert is not None
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            timeout_graceful_shutdown=graceful_s,
            access_log=False,
            # X-Forwarded-* are believed only from the proxies the service settings name (its own middleware)
            proxy_headers=False,
            ssl_certfile=str(tls_cert) if tls_cert is not None else None,
            ssl_keyfile=str(tls_key) if tls_key is not None else None,
        )
        try:
            config.load()  # reads the certificate and key now: a bad pair is one clear error before serving
        except (OSError, ValueError) as exc:
            raise InputError(f"web service: cannot use the TLS certificate and key: {exc}") from None
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8000`` (``https://`` with TLS)."""
        return url_of(self.sock, tls=self.tls)

    async def __aenter__(self) -> WebServer:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]), name="web-service")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the web service stopped while starting")
            await asyncio.sleep(0.01)
        log.info("event=web_service_started url=%s", self.url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self.sock.close()
        app = self._server.config.app
        close = getattr(app.state, "close", None) if isinstance(app, FastAPI) else None
        if callable(close):  # what create_app started (hashing workers, pending audit summaries)
            await asyncio.to_thread(close)
        log.info("event=web_service_stopped")


__all__ = ["WebServer", "bind_socket", "is_loopback", "plain_http_warning", "url_of"]

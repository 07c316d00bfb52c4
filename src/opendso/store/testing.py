"""Helpers for tests that use a real PostgreSQL server and make it unreachable on purpose.

Policy: tests reach PostgreSQL at ``OPENDSO_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Each test gets a database of its own,
created fresh and dropped afterwards (:func:`fresh_postgres_database`). When the server cannot be
reached the test is skipped on a developer's machine but fails when ``CI=true``, so a CI run can
never pass without having exercised PostgreSQL.

:class:`TcpProxy` sits between a client and a server on loopback; stopping it cuts every
connection and refuses new ones, which makes the database unreachable for the client without
touching the shared server.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from opendso.settings import get_settings


def postgres_test_url() -> str:
    """Return the PostgreSQL URL tests use (``OPENDSO_TEST_POSTGRES_URL`` or the local default)."""
    return get_settings().database.test_postgres_url


def postgres_unreachable_reason(url: str | None = None) -> str | None:
    """Return why the test server cannot be used, or None when it answers."""
    engine = sa.create_engine(url or postgres_test_url(), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return f"PostgreSQL at {make_url(url or postgres_test_url()).render_as_string()} unreachable: {exc}"
    finally:
        engine.dispose()
    return None


@contextlib.contextmanager
def fresh_postgres_database(url: str | None = None) -> Iterator[str]:
    """Create an empty database on the test server, yield its URL, drop it afterwards."""
    admin_url = make_url(url or postgres_test_url())
    name = f"opendso_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class TcpProxy:
    """A loopback TCP proxy to ``target``; :meth:`stop` cuts every connection, :meth:`start` accepts again.

    ``delay_s`` delays every chunk by that long in each direction, order kept (a slow
    communication link: radio, a congested WAN).
    """

    def __init__(self, target_host: str, target_port: int, *, delay_s: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Listen on 127.0.0.1 (the same port as before after a stop; an ephemeral one the first time)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Close the listener and every proxied connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        delayed: queue.Queue[tuple[float, bytes]] | None = None
        if self.delay_s > 0:
            delayed = queue.Queue()
            sender = threading.Thread(target=self._send_later, args=(delayed, sink), daemon=True)
            sender.start()
            self._threads.append(sender)
        try:
            while data := source.recv(65536):
                if delayed is None:
                    sink.sendall(data)
                else:
                    delayed.put((time.monotonic() + self.delay_s, data))
        except OSError:
            pass
        finally:
            if delayed is not None:
                delayed.put((0.0, b""))
            # Either side closing ends the whole proxied connection (enough for a database client).
            with self._lock:
                self._sockets.difference_update((source, sink))
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    @staticmethod
    def _send_later(delayed: queue.Queue[tuple[float, bytes]], sink: socket.socket) -> None:
        try:
            while True:
                due, data = delayed.get()
                if not data:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                sink.sendall(data)
        except OSError:
            pass

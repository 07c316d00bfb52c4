"""What every OpenDSO UFTP endpoint shares: the transport gate, the HTTP server, the message log, common checks.

The library's services (``shapeshifter_uftp.service``) are WSGI applications. OpenDSO serves each
one behind :class:`Gate`, a WSGI application that applies the transport rules of the Shapeshifter
specification (appendix "Message transport mechanism", section "Error handling": errors before
the message is known to be valid USEF XML are HTTP status codes) that the library leaves to the
server, and then hands the request to the library, which unseals it and checks the signature:

============================================================  ====================================
condition                                                     answer
============================================================  ====================================
not the endpoint's path / not POST                            404 / 405 (RFC 9110 15.5.5, 15.5.6)
more requests from one address than the policy allows         429 Too Many Requests (spec table)
no Content-Length header                                      411 Length Required (spec table)
body larger than ``max_body_bytes``                           413 Content Too Large (RFC 9110 15.5.14)
Content-Type not text/xml, or a charset other than utf-8      400 Bad Request (spec table)
SignedMessage XML cannot be parsed / is not schema-compliant  400 Bad Request (spec table)
sender (SenderDomain, SenderRole) not in the directory        419 Authentication Timeout (spec
                                                              table: the sender's key cannot be
                                                              looked up; the library's
                                                              ``AuthenticationTimeoutException``)
signature does not verify with the sender's key               401 Unauthorized (library)
unsealed XML cannot be parsed                                 400 Bad Request (library)
============================================================  ====================================

Once the message is valid USEF XML, errors are answered with the message type's response message,
``Result="Rejected"`` and a ``RejectionReason`` (specification, chapter "Message validation",
table of generic rejection reasons). :func:`check_common` applies the generic ones every
endpoint shares (Barred Sender, Unknown Recipient, Invalid Sender for a message type the sender's
role may not send, Duplicate Identifier, Already Submitted); the library itself checks
"Invalid Sender" (SenderDomain of envelope and inner message differ) and "Invalid Message" (a
message type the role does not receive). Each endpoint adds the checks of its own messages.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from shapeshifter_uftp import transport as uftp_transport  # type: ignore[import-untyped]
from shapeshifter_uftp.client import client_map  # type: ignore[import-untyped]
from shapeshifter_uftp.exceptions import (  # type: ignore[import-untyped]
    AlreadySubmittedException,
    BarredSenderException,
    ClientTransportException,
    DuplicateIdentifierException,
    FunctionalException,
    InvalidMessageException,
    InvalidSenderException,
    UnknownRecipientException,
)
from shapeshifter_uftp.service.base_service import snake_case  # type: ignore[import-untyped]
from shapeshifter_uftp.uftp import (  # type: ignore[import-untyped]
    SignedMessage,
    TestMessage,
    TestMessageResponse,
    origin_map,
    request_response_map,
)

from opendso.errors import InputError, RemoteError
from opendso.markets.uftp.directory import Directory

__all__ = [
    "UFTP_PATH",
    "Endpoint",
    "Gate",
    "GuardedService",
    "LoggedMessage",
    "MessageLedger",
    "MessageLog",
    "bind_library_models",
    "can_answer",
    "check_common",
    "guarded_process",
    "log_in",
    "reference_of",
    "rejection",
    "response_outcome",
    "send_message",
]

log = logging.getLogger(__name__)

#: The URL path of a UFTP 3.x endpoint (specification, "Service discovery", "Version coupled to URL").
UFTP_PATH = "/shapeshifter/api/v3/message"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _status_line(status: HTTPStatus | int) -> str:
    code = int(status)
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Authentication Timeout" if code == 419 else "Error"
    return f"{code} {phrase}"


def bind_library_models() -> None:
    """Make the library's XML parser find only the library's message classes (idempotent).

    shapeshifter-uftp parses an unsealed message by its root element name through one shared
    xsdata ``XmlContext`` without a models package, so xsdata picks the *last imported* dataclass of
    that name in the whole process; OpenDSO's own ``markets.model.FlexOffer`` then shadows the
    library's and every FlexOffer fails with "Unknown property FlexOffer:OfferOption". Restricting
    the context to the ``shapeshifter_uftp`` package (xsdata's ``models_package``) fixes the lookup.
    """
    context = uftp_transport._context
    if context.models_package != "shapeshifter_uftp":
        context.models_package = "shapeshifter_uftp"
        context.reset()


class Gate:
    """The WSGI application in front of a library service: the transport checks, then the library.

    ``rate_limit`` requests per ``rate_window_s`` seconds are taken from one remote address; more
    are refused with 429 until the window has moved on.
    """

    def __init__(
        self,
        service: WsgiApp,
        directory: Directory,
        *,
        path: str = UFTP_PATH,
        max_body_bytes: int = 256_000,
        rate_limit: int = 6_000,
        rate_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_body_bytes <= 0 or rate_limit <= 0 or rate_window_s <= 0:
            raise InputError("UFTP gate: max_body_bytes, rate_limit and rate_window_s must be > 0")
        bind_library_models()
        self._service = service
        self._directory = directory
        self._path = path
        self._max_body = max_body_bytes
        self._rate_limit = rate_limit
        self._window = rate_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def _too_many(self, address: str) -> bool:
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(address, deque())
            while hits and hits[0] <= now - self._window:
                hits.popleft()
            if len(hits) >= self._rate_limit:
                return True
            hits.append(now)
            return False

    def _refuse(self, start_response: StartResponse, status: HTTPStatus | int, why: str, peer: str) -> list[bytes]:
        log.warning("event=uftp_refused status=%d reason=%s peer=%s", int(status), why, peer)
        start_response(_status_line(status), [("Content-Type", "text/plain; charset=utf-8")])
        return [why.encode()]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Answer one HTTP request (WSGI)."""
        peer = str(environ.get("REMOTE_ADDR", "?"))
        if environ.get("PATH_INFO") != self._path:
            return self._refuse(start_response, HTTPStatus.NOT_FOUND, "not a UFTP endpoint", peer)
        if environ.get("REQUEST_METHOD") != "POST":
            return self._refuse(start_response, HTTPStatus.METHOD_NOT_ALLOWED, "only POST", peer)
        if self._too_many(peer):
            return self._refuse(start_response, HTTPStatus.TOO_MANY_REQUESTS, "too many requests", peer)
        raw_length = environ.get("CONTENT_LENGTH") or ""
        if not raw_length.isdigit():
            return self._refuse(start_response, HTTPStatus.LENGTH_REQUIRED, "Content-Length required", peer)
        length = int(raw_length)
        if length > self._max_body:
            return self._refuse(start_response, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large", peer)
        media, _, params = str(environ.get("CONTENT_TYPE", "")).partition(";")
        charset = params.strip().lower().removeprefix("charset=").strip('"') if params.strip() else "utf-8"
        if media.strip().lower() != "text/xml" or charset != "utf-8":
            return self._refuse(start_response, HTTPStatus.BAD_REQUEST, "Content-Type must be text/xml; utf-8", peer)
        body = environ["wsgi.input"].read(length)
        try:
            signed = uftp_transport.parser.from_bytes(body, SignedMessage)
        except Exception:
            return self._refuse(start_response, HTTPStatus.BAD_REQUEST, "SignedMessage is not valid XML", peer)
        if not self._directory.knows(signed.sender_domain, str(signed.sender_role)):
            return self._refuse(start_response, 419, "unknown sender", peer)
        environ = dict(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self._service(environ, start_response)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=uftp_http " + format, *args)


class Endpoint:
    """A WSGI application served on ``host:port`` (0: an ephemeral port) by wsgiref in a thread."""

    def __init__(self, app: WsgiApp, *, host: str = "127.0.0.1", port: int = 0, path: str = UFTP_PATH) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._path = path
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Bind and serve in a daemon thread; the endpoint URL."""
        if self._server is not None:
            return self.url
        self._server = make_server(self._host, self._port, self._app, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="uftp-endpoint", daemon=True
        )
        self._thread.start()
        log.info("event=uftp_endpoint_started url=%s", self.url)
        return self.url

    @property
    def url(self) -> str:
        """``http://host:port/shapeshifter/api/v3/message`` once started."""
        if self._server is None:
            raise InputError("UFTP endpoint: not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self._path}"

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


@dataclass(frozen=True)
class LoggedMessage:
    """One UFTP message in or out: what, with whom, and how it ended."""

    time: datetime
    direction: str  # "in" or "out"
    kind: str
    message_id: str | None
    conversation_id: str | None
    peer: str
    outcome: str  # "accepted", "rejected", "sent", "failed", "received"
    reason: str | None = None
    reference: str | None = None


class MessageLog:
    """Every message in and out, in order, with a condition to wait on (thread-safe)."""

    def __init__(self) -> None:
        self._entries: list[LoggedMessage] = []
        self._cond = threading.Condition()

    def add(self, entry: LoggedMessage) -> None:
        """Append ``entry``, log it and wake waiters."""
        with self._cond:
            self._entries.append(entry)
            self._cond.notify_all()
        log.info(
            "event=uftp_message direction=%s kind=%s id=%s peer=%s outcome=%s reason=%s",
            entry.direction,
            entry.kind,
            entry.message_id,
            entry.peer,
            entry.outcome,
            entry.reason,
        )

    def entries(self) -> tuple[LoggedMessage, ...]:
        """All entries so far."""
        with self._cond:
            return tuple(self._entries)

    def wait_for(self, predicate: Callable[[tuple[LoggedMessage, ...]], bool], timeout_s: float) -> bool:
        """Block until ``predicate(entries)`` holds or ``timeout_s`` passed; whether it holds."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(tuple(self._entries)), timeout=timeout_s)

    def notify(self) -> None:
        """Wake waiters (state outside the log changed)."""
        with self._cond:
            self._cond.notify_all()


class MessageLedger:
    """The MessageIDs received, with a digest of each message's content (duplicate detection)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, str] = {}

    def admit(self, message: Any) -> None:
        """Record ``message``; the library's exception when its MessageID was used before.

        Specification, "Message validation": "Already Submitted" when the MessageID is known and
        the content is the same; "Duplicate Identifier" when the content differs.
        """
        digest = hashlib.sha256(uftp_transport.to_xml(message).encode()).hexdigest()
        with self._lock:
            before = self._seen.get(message.message_id)
            if before is None:
                self._seen[message.message_id] = digest
                return
        if before == digest:
            raise AlreadySubmittedException()
        raise DuplicateIdentifierException()


def check_common(
    message: Any, sender_role: str, *, own_domain: str, directory: Directory, ledger: MessageLedger
) -> None:
    """The generic rejection reasons every endpoint applies (raises the library's exception)."""
    if directory.is_barred(message.sender_domain, str(sender_role)):
        raise BarredSenderException()
    if message.recipient_domain != own_domain:
        raise UnknownRecipientException()
    origin = origin_map.get(type(message))
    if origin is not None and origin != str(sender_role) and type(message) not in (TestMessage, TestMessageResponse):
        raise InvalidSenderException()
    ledger.admit(message)


def rejection(message: Any, why: str) -> FunctionalException:
    """A rejection with an implementation-specific reason ("[Other reasonable cause]" of the specification)."""
    exc = InvalidMessageException(message)
    exc.rejection_reason = f"Invalid Message: {why}"
    return exc


def can_answer(own_role: str, sender_role: str) -> bool:
    """Whether the library has a client from ``own_role`` to ``sender_role`` (to send a response)."""
    return (own_role, str(sender_role)) in client_map


def response_outcome(message: Any) -> str:
    """``accepted`` or ``rejected`` for a response message, ``received`` for others."""
    result = getattr(message, "result", None)
    if result is None or not type(message).__name__.endswith("Response"):
        return "received"
    return "accepted" if str(result) == "Accepted" else "rejected"


def reference_of(message: Any) -> str | None:
    """The MessageID a response refers to (its ``<Type>MessageID`` attribute), if any."""
    for name in vars(message) if hasattr(message, "__dict__") else ():
        if name.endswith("_message_id") and name != "message_id":
            value = getattr(message, name)
            if isinstance(value, str):
                return value
    return None


def log_in(journal: MessageLog, message: Any, outcome: str, reason: str | None = None) -> None:
    """Log an incoming message."""
    journal.add(
        LoggedMessage(
            time=datetime.now(UTC),
            direction="in",
            kind=type(message).__name__,
            message_id=message.message_id,
            conversation_id=message.conversation_id,
            peer=str(message.sender_domain),
            outcome=outcome,
            reason=reason,
            reference=reference_of(message),
        )
    )


def send_message(service: Any, journal: MessageLog, recipient_domain: str, recipient_role: str, message: Any) -> str:
    """Sign and send ``message`` with the library's client; its MessageID, or :class:`RemoteError`.

    The HTTP answer is the transport disposition only; the functional answer arrives later as a
    response message on our own endpoint.
    """
    client = service._get_client(recipient_domain, recipient_role, service.version)
    # the client's public method for this message type (send_flex_offer, ...), where the pair has one
    sender = getattr(client, f"send_{snake_case(type(message).__name__)}", client._send_message)
    try:
        sender(message)
    except ClientTransportException as exc:
        status = exc.response.status_code
        journal.add(
            LoggedMessage(
                time=datetime.now(UTC),
                direction="out",
                kind=type(message).__name__,
                message_id=message.message_id,
                conversation_id=message.conversation_id,
                peer=recipient_domain,
                outcome="failed",
                reason=f"HTTP {status}",
                reference=reference_of(message),
            )
        )
        raise RemoteError(f"UFTP {type(message).__name__} to {recipient_domain}: HTTP {status}") from exc
    except OSError as exc:
        journal.add(
            LoggedMessage(
                time=datetime.now(UTC),
                direction="out",
                kind=type(message).__name__,
                message_id=message.message_id,
                conversation_id=message.conversation_id,
                peer=recipient_domain,
                outcome="failed",
                reason=type(exc).__name__,
                reference=reference_of(message),
            )
        )
        raise RemoteError(f"UFTP {type(message).__name__} to {recipient_domain}: {exc}") from exc
    journal.add(
        LoggedMessage(
            time=datetime.now(UTC),
            direction="out",
            kind=type(message).__name__,
            message_id=message.message_id,
            conversation_id=message.conversation_id,
            peer=recipient_domain,
            outcome=response_outcome(message) if type(message).__name__.endswith("Response") else "sent",
            reason=getattr(message, "rejection_reason", None),
            reference=reference_of(message),
        )
    )
    return str(message.message_id)


def guarded_process(
    service: Any,
    base: Any,
    message: Any,
    sender_role: str,
    *,
    journal: MessageLog,
    ledger: MessageLedger,
    directory: Directory,
    check: Callable[[Any, str], None],
) -> None:
    """The library's ``_process_message`` with OpenDSO's checks in front: reject or process.

    A failing check of a request message is answered with its response message (Rejected and the
    reason) through the library's ``_reject_message``; a failing response message (which gets no
    answer in UFTP) is logged as rejected.
    """
    try:
        check_common(message, sender_role, own_domain=service.sender_domain, directory=directory, ledger=ledger)
        check(message, sender_role)
    except FunctionalException as err:
        log_in(journal, message, "rejected", err.rejection_reason)
        if type(message) in request_response_map and can_answer(str(service.sender_role), sender_role):
            envelope = SignedMessage(sender_domain=message.sender_domain, sender_role=sender_role, body=b"")
            service._reject_message(envelope, message, err.rejection_reason)
        return
    log_in(journal, message, response_outcome(message), getattr(message, "rejection_reason", None))
    base._process_message(service, message, sender_role)


class GuardedService:
    """Put this first in a library service's bases: OpenDSO's checks before processing, rejections logged.

    ``party`` (the CRO, the DSO desk or the aggregator) holds ``log``, ``ledger`` and
    ``directory``; ``check`` is its own check of what it receives (after :func:`check_common`);
    ``library`` is the library's service class whose ``_process_message`` runs when the checks
    pass; ``tag`` names the party in log events. A failure while processing or answering is logged
    (the library runs both in worker threads, where an exception would vanish) and never raised.
    """

    def _guard(self, party: Any, library: Any, tag: str, check: Callable[[Any, str], None]) -> None:
        self._party = party
        self._library = library
        self._tag = tag
        self._party_check = check

    def _process_message(self, message: Any, sender_role: Any) -> None:
        try:
            guarded_process(
                self,
                self._library,
                message,
                str(sender_role),
                journal=self._party.log,
                ledger=self._party.ledger,
                directory=self._party.directory,
                check=self._party_check,
            )
        except Exception:
            log.exception("event=uftp_%s_processing_failed kind=%s", self._tag, type(message).__name__)
        finally:
            self._party.log.notify()

    def _reject_message(self, envelope: Any, message: Any, reason: str) -> None:
        self._party.log.add(
            LoggedMessage(
                datetime.now(UTC),
                "out",
                f"{type(message).__name__}Response",
                None,
                message.conversation_id,
                envelope.sender_domain,
                "rejected",
                reason,
                message.message_id,
            )
        )
        try:
            super()._reject_message(envelope, message, reason)  # type: ignore[misc]
        except Exception:
            # a worker thread of the library: an unreachable sender must not vanish silently
            log.exception("event=uftp_%s_reject_failed to=%s", self._tag, envelope.sender_domain)

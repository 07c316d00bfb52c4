"""OpenDSO's OpenADR 2.0b VTN: openleadr's server behind mutual TLS, tied to the DER registry.

:class:`DemandResponseVtn` wraps :class:`openleadr.OpenADRServer` (simple HTTP, pull model) and
adds what a DSO needs around it:

- **Mutual TLS, always.** The server listens only with an SSL context that requires a client
  certificate signed by the configured CA (TLS 1.2 or later, as the OpenADR 2.0b Profile
  Specification's security section requires). openleadr checks a VEN's certificate
  fingerprint only over HTTPS (over plain HTTP a wrong fingerprint passes), so there is no
  plain-HTTP mode. A VEN without a certificate, or with one from another CA, is refused in the
  handshake.
- **Registration tied to the registry.** ``oadrCreatePartyRegistration`` is accepted only from
  a VEN the DSO enrolled (:class:`~opendso.der.openadr.enrollment.VenEnrollments`), presenting
  the enrolled certificate (the TLS fingerprint must match), whose assets are all still in the
  DER registry. Every refusal is logged (``event=openadr.refused``) and kept (:attr:`refusals`,
  bounded). After registration openleadr's own check runs on every message through the
  ``ven_lookup``/``fingerprint_lookup`` callbacks: the TLS fingerprint and the XML signature's
  certificate must be the enrolled one for the ``venID`` the message names.
- **Events** (:class:`~opendso.der.openadr.program.DrEvent`): level (SIMPLE) and price
  (ELECTRICITY_PRICE) signals with consecutive intervals, targeted at VENs or at resources
  (registry asset ids); their status as openleadr gives it (far, near, active, completed, or
  cancelled); every VEN's ``optIn``/``optOut`` (its ``oadrCreatedEvent``) recorded per VEN and
  event; cancellation.
- **Reports**: VENs' ``TELEMETRY_USAGE`` reports of real power (W, any SI scale) per resource
  they are enrolled for are requested and kept per VEN and resource with their times
  (:meth:`telemetry` gives a pandas Series), for the markets layer to verify event performance
  against a baseline. Reports for other resources or quantities are not requested.

openleadr keeps its lookups and message signer on a class shared by every server in the
process; this wrapper sets them on its own service objects, so a plain ``OpenADRServer`` in the
same process does not change its checks.
"""

from __future__ import annotations

import copy
import logging
import secrets
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from aiohttp import web
from aiohttp.typedefs import Handler
from openleadr import OpenADRServer, objects, utils  # type: ignore[import-untyped]
from openleadr.messaging import create_message  # type: ignore[import-untyped]

from opendso.der.openadr.enrollment import AssetSource, VenEnrollment, VenEnrollments
from opendso.der.openadr.program import DrEvent, DrProgram, setpoint_requests
from opendso.errors import ConflictError, ForbiddenError, InputError, NotFoundError
from opendso.operations.setpoints.model import FlexibleDer, SetpointRequest
from opendso.text import check_text

__all__ = ["DemandResponseVtn", "OptRecord", "Refusal", "VtnTls", "mutual_tls_context"]

log = logging.getLogger(__name__)

#: SI scale codes of OpenADR reports and their factors.
_SCALE = {
    "p": 1e-12,
    "n": 1e-9,
    "micro": 1e-6,
    "m": 1e-3,
    "c": 1e-2,
    "d": 1e-1,
    "none": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}
_MAX_REFUSALS = 1000
_MAX_SAMPLES = 100_000
#: Largest message accepted (bytes); an OpenADR message with a few hundred intervals is far smaller.
_MAX_BODY = 512 * 1024


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what openleadr would answer with a 500 or read whole: a body not XML (415) or too large (413)."""
    if request.content_type != "application/xml":
        log.warning("event=openadr.refused_message reason=media_type media=%r", request.content_type[:100])
        return web.Response(status=415, text="OpenADR messages are application/xml")
    if request.content_length is not None and request.content_length > _MAX_BODY:
        log.warning("event=openadr.refused_message reason=size bytes=%d", request.content_length)
        return web.Response(status=413, text=f"OpenADR messages are at most {_MAX_BODY} bytes")
    return await handler(request)


@dataclass(frozen=True, slots=True)
class VtnTls:
    """The VTN's TLS material (PEM files): its certificate and key (also used to sign messages) and the VENs' CA."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    key_password: str | None = None

    def __post_init__(self) -> None:
        for name in ("cert_file", "key_file", "ca_file"):
            path = Path(getattr(self, name))
            if not path.is_file():
                raise InputError(f"OpenADR VTN TLS: {name} {str(path)!r} is not a file")
            object.__setattr__(self, name, path)


def mutual_tls_context(tls: VtnTls) -> ssl.SSLContext:
    """A server SSL context that requires a client certificate signed by ``tls.ca_file`` (TLS 1.2 or later)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=str(tls.ca_file))
    except ssl.SSLError as exc:
        raise InputError(
            f"OpenADR VTN TLS: ca_file {str(tls.ca_file)!r} holds no usable CA certificate ({exc})"
        ) from None
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file), tls.key_password)
    except ssl.SSLError as exc:
        raise InputError(
            f"OpenADR VTN TLS: cert_file {str(tls.cert_file)!r} and key_file {str(tls.key_file)!r} "
            f"are not a matching certificate and key ({exc})"
        ) from None
    return context


@dataclass(frozen=True, slots=True)
class Refusal:
    """A VEN the VTN refused: when, the name (or venID) it gave, why and details.

    Reasons: ``unknown_ven`` (the name is not enrolled), ``fingerprint`` (not the enrolled
    certificate), ``ven_id`` (a venID other than the enrolled one), ``asset`` (an enrolled asset
    left the registry or changed hands), ``unknown_ven_id`` (a message names a venID that is not,
    or no longer, enrolled).
    """

    at: datetime
    ven_name: str
    reason: str
    detail: str
    ven_id: str = ""


@dataclass(frozen=True, slots=True)
class OptRecord:
    """A VEN's answer to an event: ``optIn`` or ``optOut``, and when the VTN received it."""

    ven_name: str
    event_id: str
    opt_type: str
    at: datetime


@dataclass
class _EventState:
    event: DrEvent
    ven_ids: tuple[str, ...]
    assets: tuple[str, ...]
    active_period: Any
    cancelled: bool = False


class DemandResponseVtn:
    """The DSO's OpenADR 2.0b VTN (see the module docstring).

    ``vtn_id``: how the VTN names itself to VENs; ``registry``: where assets are read
    (:class:`~opendso.der.registry.DerRegistry`); ``tls``: the certificate, key and the VENs' CA;
    ``host``/``port``: where it listens (port 0: an ephemeral port, read :attr:`port` after
    :meth:`start`); ``poll_interval``: the polling interval the VTN asks of VENs (whole seconds,
    at least 1 s); ``report_interval``: the sampling interval it asks of telemetry reports.
    """

    def __init__(
        self,
        vtn_id: str,
        registry: AssetSource,
        *,
        tls: VtnTls,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_interval: timedelta = timedelta(seconds=10),
        report_interval: timedelta = timedelta(seconds=10),
        program: DrProgram | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        for name, span in (("poll_interval", poll_interval), ("report_interval", report_interval)):
            if span < timedelta(seconds=1) or span.microseconds:
                raise InputError(f"OpenADR VTN: {name} must be whole seconds, at least 1 s, got {span}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise InputError(f"OpenADR VTN: port {port!r} is not 0..65535")
        self.vtn_id = check_text("OpenADR VTN id", vtn_id, max_len=200)
        self.enrollments = VenEnrollments(registry)
        self.tls = tls
        self.host = host
        self.requested_port = port
        self.poll_interval = poll_interval
        self.report_interval = report_interval
        self.program = program or DrProgram()
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.refusals: deque[Refusal] = deque(maxlen=_MAX_REFUSALS)
        self._ssl = mutual_tls_context(tls)
        self._registrations: dict[str, str] = {}  # ven_id -> registration_id
        self._events: dict[str, _EventState] = {}
        self._opts: dict[tuple[str, str], OptRecord] = {}
        self._samples: dict[tuple[str, str], deque[tuple[datetime, float]]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.server = self._make_server()

    # -- the openleadr server ------------------------------------------------------------------------
    def _make_server(self) -> Any:
        server = OpenADRServer(
            vtn_id=self.vtn_id,
            cert=str(self.tls.cert_file),
            key=str(self.tls.key_file),
            passphrase=self.tls.key_password,
            show_fingerprint=False,
            http_host=self.host,
            http_port=self.requested_port,
            requested_poll_freq=self.poll_interval,
        )
        signer = partial(
            create_message,
            cert=self.tls.cert_file.read_bytes(),
            key=self.tls.key_file.read_bytes(),
            passphrase=self.tls.key_password,
        )
        for service in server.services.values():
            # per-instance, so another server in the process cannot change this one's checks
            service.ven_lookup = self._ven_lookup
            service.fingerprint_lookup = self._fingerprint_lookup
            service.verify_message_signatures = True
            service._create_message = signer
        server.app.middlewares.append(_guard)
        server.add_handler("on_create_party_registration", self._on_create_party_registration)
        server.add_handler("on_register_report", self._on_register_report)
        events = server.services["event_service"]
        original = events.handlers["oadrCreatedEvent"]

        async def created_event(payload: dict[str, Any]) -> Any:
            result = await original(payload)
            self._record_opts(payload)
            return result

        events.handlers["oadrCreatedEvent"] = created_event
        return server

    async def start(self) -> None:
        """Listen (mutual TLS only) on :attr:`host`; the port bound is :attr:`port`."""
        if self._runner is not None:
            raise ConflictError("OpenADR VTN: started already")
        runner = web.AppRunner(self.server.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("event=openadr.started vtn_id=%s host=%s port=%d", self.vtn_id, self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close the VENs' connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("event=openadr.stopped vtn_id=%s", self.vtn_id)

    @property
    def url(self) -> str:
        """The VTN's base URL (``https://host:port/OpenADR2/Simple/2.0b``)."""
        return f"https://{self.host}:{self.port}{self.server.http_path_prefix}"

    # -- enrollment and registration -----------------------------------------------------------------
    def enroll(self, ven_name: str, fingerprint: str, assets: Iterable[str], *, party: str) -> VenEnrollment:
        """Enroll a VEN (see :meth:`VenEnrollments.enroll`) and log it."""
        enrollment = self.enrollments.enroll(ven_name, fingerprint, assets, party=party)
        log.info(
            "event=openadr.enrolled ven_name=%r ven_id=%s party=%r assets=%d",
            enrollment.ven_name,
            enrollment.ven_id,
            enrollment.party,
            len(enrollment.assets),
        )
        return enrollment

    def withdraw(self, ven_name: str) -> VenEnrollment:
        """Withdraw a VEN's enrollment; its registration ends (its next message asks it to re-register)."""
        enrollment = self.enrollments.withdraw(ven_name)
        self._registrations.pop(enrollment.ven_id, None)
        log.info("event=openadr.withdrawn ven_name=%r ven_id=%s", enrollment.ven_name, enrollment.ven_id)
        return enrollment

    def registered(self, ven_name: str) -> bool:
        """True when the enrolled VEN ``ven_name`` has registered."""
        enrollment = self.enrollments.find(ven_name)
        return enrollment is not None and enrollment.ven_id in self._registrations

    def _refuse(self, ven_name: str, reason: str, detail: str, ven_id: str = "") -> bool:
        self.refusals.append(Refusal(self.clock(), ven_name[:200], reason, detail[:500], ven_id[:200]))
        log.warning(
            "event=openadr.refused ven_name=%r ven_id=%r reason=%s detail=%r",
            ven_name[:200],
            ven_id[:200],
            reason,
            detail[:500],
        )
        return False

    async def _on_create_party_registration(self, payload: Mapping[str, Any]) -> tuple[str, str] | bool:
        ven_name = str(payload.get("ven_name") or "")
        enrollment = self.enrollments.find(ven_name)
        if enrollment is None:
            return self._refuse(ven_name, "unknown_ven", "the name is not enrolled")
        fingerprint = payload.get("fingerprint")
        if fingerprint != enrollment.fingerprint:
            return self._refuse(ven_name, "fingerprint", f"certificate {fingerprint} is not the enrolled one")
        asked_id = payload.get("ven_id")
        if asked_id and asked_id != enrollment.ven_id:
            return self._refuse(ven_name, "ven_id", f"venID {asked_id!r} is not the one given at enrollment")
        for asset_id in enrollment.assets:
            try:
                self.enrollments.check_asset(enrollment.ven_name, asset_id, enrollment.party)
            except (InputError, ForbiddenError) as exc:  # gone from the registry, or changed hands
                return self._refuse(ven_name, "asset", str(exc))
        registration_id = self._registrations.get(enrollment.ven_id) or f"reg-{secrets.token_hex(8)}"
        self._registrations[enrollment.ven_id] = registration_id
        log.info("event=openadr.registered ven_name=%r ven_id=%s", enrollment.ven_name, enrollment.ven_id)
        return enrollment.ven_id, registration_id

    def _ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        # openleadr asks on every message naming a venID except a registration (then: the fingerprint lookup)
        enrollment = self.enrollments.by_ven_id(ven_id)
        if enrollment is None:
            self._refuse("", "unknown_ven_id", "the venID is not enrolled", str(ven_id))
            return None
        return {
            "ven_id": enrollment.ven_id,
            "ven_name": enrollment.ven_name,
            "fingerprint": enrollment.fingerprint,
            "registration_id": self._registrations.get(enrollment.ven_id),
        }

    def _fingerprint_lookup(self, ven_id: str) -> str | None:
        enrollment = self.enrollments.by_ven_id(ven_id)
        if enrollment is None:
            self._refuse("", "unknown_ven_id", "the venID is not enrolled", str(ven_id))
            return None
        return enrollment.fingerprint

    # -- events --------------------------------------------------------------------------------------
    def create_event(self, event: DrEvent) -> tuple[str, ...]:
        """Queue ``event`` for every VEN it reaches; return their names.

        A VEN named must be enrolled and a resource must be held by an enrolled VEN (else
        :class:`NotFoundError`); an event id used before raises :class:`ConflictError`. VENs named
        get the event targeted at themselves; VENs reached through resources get it targeted at
        those resources.
        """
        if not isinstance(event, DrEvent):
            raise InputError(f"OpenADR VTN: an event must be a DrEvent, got {type(event).__name__}")
        if event.id in self._events:
            raise ConflictError(f"DR event {event.id!r} exists already")
        targets: dict[str, list[str]] = {}  # ven name -> resources ([] = the VEN itself)
        for name in event.vens:
            self.enrollments.get(name)
            targets.setdefault(name, [])
        for asset_id in event.resources:
            holder = self.enrollments.holder_of(asset_id)
            if holder is None:
                raise NotFoundError(f"DR event {event.id!r}: resource {asset_id} is not held by an enrolled VEN")
            if holder.ven_name not in event.vens:
                targets.setdefault(holder.ven_name, []).append(asset_id)
        intervals = [
            objects.Interval(dtstart=iv.start, duration=iv.duration, signal_payload=iv.value, uid=k)
            for k, iv in enumerate(event.intervals)
        ]
        active_period = utils.get_active_period_from_intervals(intervals, False)
        ven_ids: list[str] = []
        assets: set[str] = set()
        for name in sorted(targets):
            enrollment = self.enrollments.get(name)
            resources = targets[name]
            assets.update(resources or enrollment.assets)
            oadr_targets = (
                [objects.Target(resource_id=r) for r in resources]
                if resources
                else [objects.Target(ven_id=enrollment.ven_id)]
            )
            oadr_event = objects.Event(
                event_descriptor=objects.EventDescriptor(
                    event_id=event.id,
                    modification_number=0,
                    market_context=event.market_context,
                    event_status="far",
                    created_date_time=self.clock(),
                    vtn_comment=event.reason,
                ),
                active_period=copy.deepcopy(active_period),
                event_signals=[
                    objects.EventSignal(
                        intervals=copy.deepcopy(intervals),
                        signal_name=event.signal.openadr_name,
                        signal_type=event.signal.openadr_type,
                        signal_id=f"{event.id}-{event.signal.value}",
                    )
                ],
                targets=oadr_targets,
                response_required="always",
            )
            self.server.add_raw_event(ven_id=enrollment.ven_id, event=oadr_event, callback=_no_callback)
            ven_ids.append(enrollment.ven_id)
        self._events[event.id] = _EventState(event, tuple(ven_ids), tuple(sorted(assets)), active_period)
        log.info(
            "event=openadr.event_created event_id=%s signal=%s origin=%s vens=%d intervals=%d start=%s",
            event.id,
            event.signal.value,
            event.origin.value,
            len(ven_ids),
            len(event.intervals),
            event.start.isoformat(),
        )
        return tuple(sorted(targets))

    def cancel_event(self, event_id: str) -> None:
        """Cancel an event for every VEN it went to (its status becomes ``cancelled``)."""
        state = self._state(event_id)
        if state.cancelled:
            raise ConflictError(f"DR event {event_id!r} is cancelled already")
        for ven_id in state.ven_ids:
            self.server.cancel_event(ven_id, event_id)
        state.cancelled = True
        log.info("event=openadr.event_cancelled event_id=%s vens=%d", event_id, len(state.ven_ids))

    def _state(self, event_id: str) -> _EventState:
        state = self._events.get(event_id)
        if state is None:
            raise NotFoundError(f"DR event {event_id!r} is not known")
        return state

    def event_ids(self) -> list[str]:
        """Every event's id, in the order the events were created."""
        return list(self._events)

    def event(self, event_id: str) -> DrEvent:
        """The event ``event_id``; unknown: :class:`NotFoundError`."""
        return self._state(event_id).event

    def event_status(self, event_id: str) -> str:
        """The event's OpenADR status: ``cancelled``, else openleadr's far, near, active or completed."""
        state = self._state(event_id)
        if state.cancelled:
            return "cancelled"
        return str(utils.determine_event_status(state.active_period))

    def event_vens(self, event_id: str) -> tuple[str, ...]:
        """The names of the VENs the event went to."""
        names = []
        for ven_id in self._state(event_id).ven_ids:
            enrollment = self.enrollments.by_ven_id(ven_id)
            if enrollment is not None:
                names.append(enrollment.ven_name)
        return tuple(sorted(names))

    def event_assets(self, event_id: str) -> tuple[str, ...]:
        """The registry assets the event reaches (its resources, or every asset of the VENs it names)."""
        return self._state(event_id).assets

    def setpoint_requests(self, event_id: str, index: int, ders: Mapping[str, FlexibleDer]) -> list[SetpointRequest]:
        """The arbiter requests interval ``index`` of the event asks for on the assets it reaches (see program)."""
        state = self._state(event_id)
        return setpoint_requests(state.event, index, ders, assets=state.assets, program=self.program)

    def _record_opts(self, payload: Mapping[str, Any]) -> None:
        enrollment = self.enrollments.by_ven_id(payload.get("ven_id"))
        if enrollment is None:
            return
        for response in payload.get("event_responses") or ():
            event_id = str(response.get("event_id"))
            opt_type = str(response.get("opt_type"))
            state = self._events.get(event_id)
            if state is None or enrollment.ven_id not in state.ven_ids or opt_type not in ("optIn", "optOut"):
                continue
            record = OptRecord(enrollment.ven_name, event_id, opt_type, self.clock())
            self._opts[(event_id, enrollment.ven_name)] = record
            log.info("event=openadr.opt ven_name=%r event_id=%s opt=%s", enrollment.ven_name, event_id, opt_type)

    def opt(self, event_id: str, ven_name: str) -> OptRecord | None:
        """The VEN's latest answer to the event, or None before it answered."""
        self._state(event_id)
        return self._opts.get((event_id, ven_name))

    def opts(self, event_id: str) -> dict[str, OptRecord]:
        """Every answer to the event received so far, by VEN name."""
        self._state(event_id)
        return {v: r for (e, v), r in self._opts.items() if e == event_id}

    # -- reports -------------------------------------------------------------------------------------
    async def _on_register_report(
        self,
        ven_id: str,
        resource_id: str,
        measurement: str,
        unit: str,
        scale: str,
        min_sampling_interval: timedelta,
        max_sampling_interval: timedelta,
    ) -> tuple[Callable[[list[tuple[datetime, float]]], None], timedelta] | None:
        enrollment = self.enrollments.by_ven_id(ven_id)
        if enrollment is None:
            return None
        if resource_id not in enrollment.assets:
            log.warning(
                "event=openadr.report_refused ven_name=%r resource=%r reason=not_enrolled",
                enrollment.ven_name,
                str(resource_id)[:200],
            )
            return None
        if measurement != "RealPower" or unit != "W" or scale not in _SCALE:
            log.info(
                "event=openadr.report_skipped ven_name=%r resource=%s measurement=%r unit=%r",
                enrollment.ven_name,
                resource_id,
                str(measurement)[:100],
                str(unit)[:20],
            )
            return None
        interval = min(max(self.report_interval, min_sampling_interval), max_sampling_interval)
        key = (enrollment.ven_name, resource_id)
        samples = self._samples.setdefault(key, deque(maxlen=_MAX_SAMPLES))
        factor = _SCALE[scale]

        def receive(values: list[tuple[datetime, float]]) -> None:
            for at, value in values:
                if isinstance(at, datetime) and at.tzinfo is not None and isinstance(value, int | float):
                    samples.append((at.astimezone(UTC), float(value) * factor))

        log.info(
            "event=openadr.report_requested ven_name=%r resource=%s interval_s=%g",
            key[0],
            key[1],
            interval.total_seconds(),
        )
        return receive, interval

    def telemetry(self, ven_name: str, resource_id: str) -> pd.Series:
        """The real power (W) a VEN reported for a resource, by time (UTC), sorted; empty before any report."""
        samples = self._samples.get((ven_name, resource_id), ())
        ordered = sorted(samples)
        index = pd.DatetimeIndex([t for t, _ in ordered], tz=UTC, name="time")
        return pd.Series(np.array([v for _, v in ordered], dtype=float), index=index, name=resource_id)

    def telemetry_resources(self) -> list[tuple[str, str]]:
        """The (VEN name, resource) pairs the VTN requested reports for."""
        return sorted(self._samples)


def _no_callback(ven_id: str, event_id: str, opt_type: str) -> None:
    """openleadr's per-event callback fires for the first VEN only; the VTN records every answer itself."""

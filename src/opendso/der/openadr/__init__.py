"""Demand response over OpenADR 2.0b: the DSO's VTN, enrolled VENs, events and telemetry (issue 12 item 1).

:mod:`~opendso.der.openadr.program` holds the event records (level and price signals with
intervals, their origin) and turns an event interval into set-point requests for the arbiter;
:mod:`~opendso.der.openadr.enrollment` the VENs the DSO enrolled (name, certificate fingerprint,
registry assets); :mod:`~opendso.der.openadr.vtn` the VTN itself: openleadr's server behind
mutual TLS, registration tied to the registry, opt-in/opt-out per VEN and event, telemetry
reports per resource.
"""

from __future__ import annotations

from opendso.der.openadr.enrollment import VenEnrollment, VenEnrollments, check_fingerprint
from opendso.der.openadr.program import (
    DrEvent,
    DrInterval,
    DrProgram,
    DrSignal,
    SetpointSink,
    release_event,
    setpoint_requests,
    submit_interval,
)
from opendso.der.openadr.vtn import DemandResponseVtn, OptRecord, Refusal, VtnTls, mutual_tls_context

__all__ = [
    "DemandResponseVtn",
    "DrEvent",
    "DrInterval",
    "DrProgram",
    "DrSignal",
    "OptRecord",
    "Refusal",
    "SetpointSink",
    "VenEnrollment",
    "VenEnrollments",
    "VtnTls",
    "check_fingerprint",
    "mutual_tls_context",
    "release_event",
    "setpoint_requests",
    "submit_interval",
]

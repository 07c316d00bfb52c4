"""Switching: the safety gate every open/close passes before it reaches the field.

This first increment is the gate's pure core (:class:`SafetyGate` and its records); sending
through ``TelemetryAdapter.command``, persistence of tags and documents, the API and FLISR
come in later increments and all call :meth:`SafetyGate.check`.
"""

from opendso.operations.switching.gate import SafetyGate
from opendso.operations.switching.model import (
    Confirmation,
    DeviceClass,
    DocumentKind,
    DocumentState,
    Earth,
    EarthKind,
    GateConfig,
    GateDecision,
    GateRule,
    Override,
    SafetyDocument,
    SwitchAction,
    SwitchingRequest,
    SwitchingState,
    Tag,
    TagKind,
)

__all__ = [
    "Confirmation",
    "DeviceClass",
    "DocumentKind",
    "DocumentState",
    "Earth",
    "EarthKind",
    "GateConfig",
    "GateDecision",
    "GateRule",
    "Override",
    "SafetyDocument",
    "SafetyGate",
    "SwitchAction",
    "SwitchingRequest",
    "SwitchingState",
    "Tag",
    "TagKind",
]

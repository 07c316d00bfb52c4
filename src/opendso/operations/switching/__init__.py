"""Switching: the safety gate every open/close passes before it reaches the field.

The gate's pure core (:class:`SafetyGate` and its records), the register of tags, safety
documents, earths and fault flags (:class:`SwitchingRegister`, stored by
:class:`~opendso.store.switching.SwitchingStore`), and the dispatcher
(:class:`SwitchingDispatcher`): the only way from a request on any :class:`CommandPath` to
``TelemetryAdapter.operate_switch``; switching plans (:class:`SwitchingPlan`, simulated with
:func:`simulate_plan`, kept by :class:`~.plan_book.PlanBook`) and the gate's configuration file
(:func:`read_gate_config`).
"""

from opendso.operations.switching.config_file import read_gate_config
from opendso.operations.switching.dispatch import (
    CommandPath,
    SwitchingDispatcher,
    SwitchingOutcome,
    SwitchingStep,
    execute_steps,
    measured_nodes,
    qualities_from_latest,
    route_by_point_map,
    route_setpoints_by_point_map,
)
from opendso.operations.switching.documents import (
    DocumentAction,
    SwitchingRegister,
    earth_refusal,
    next_document_state,
    switching_state,
)
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
from opendso.operations.switching.plans import (
    PlanEntry,
    PlanSimulation,
    PlanState,
    PlanStep,
    StepKind,
    StepSimulation,
    SwitchingPlan,
    simulate_plan,
)

__all__ = [
    "CommandPath",
    "Confirmation",
    "DeviceClass",
    "DocumentAction",
    "DocumentKind",
    "DocumentState",
    "Earth",
    "EarthKind",
    "GateConfig",
    "GateDecision",
    "GateRule",
    "Override",
    "PlanEntry",
    "PlanSimulation",
    "PlanState",
    "PlanStep",
    "SafetyDocument",
    "SafetyGate",
    "StepKind",
    "StepSimulation",
    "SwitchAction",
    "SwitchingDispatcher",
    "SwitchingOutcome",
    "SwitchingPlan",
    "SwitchingRegister",
    "SwitchingRequest",
    "SwitchingState",
    "SwitchingStep",
    "Tag",
    "TagKind",
    "earth_refusal",
    "execute_steps",
    "measured_nodes",
    "next_document_state",
    "qualities_from_latest",
    "read_gate_config",
    "route_by_point_map",
    "route_setpoints_by_point_map",
    "simulate_plan",
    "switching_state",
]

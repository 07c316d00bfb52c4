"""Set-points to DER: export limits merged per DER by one arbiter, checked by their own gate, sent by the dispatcher.

:class:`SetpointArbiter` holds one request per source (:class:`SetpointSource`: FLISR, ANM,
operator, demand response, markets) and point, writes the minimum of them (export limits are
caps), and refreshes it before the DER's watchdog expires; :class:`SetpointGate` checks every
value (ownership, range, stale state, ramp rate) before the
:class:`~opendso.operations.switching.dispatch.SwitchingDispatcher` sends it.
"""

from opendso.operations.setpoints.arbiter import SetpointArbiter, merge_requests
from opendso.operations.setpoints.gate import EstimateReader, LatestReader, SetpointGate
from opendso.operations.setpoints.model import (
    FlexibleDer,
    SetpointDecision,
    SetpointGateConfig,
    SetpointOutcome,
    SetpointRequest,
    SetpointRule,
    SetpointSource,
)

__all__ = [
    "EstimateReader",
    "FlexibleDer",
    "LatestReader",
    "SetpointArbiter",
    "SetpointDecision",
    "SetpointGate",
    "SetpointGateConfig",
    "SetpointOutcome",
    "SetpointRequest",
    "SetpointRule",
    "SetpointSource",
    "merge_requests",
]

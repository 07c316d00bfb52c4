"""The control-room service: FastAPI app, users and roles, the audit trail and the runtime behind them."""

from opendso.grid.layout import schematic_layout
from opendso.service.app import create_app
from opendso.service.audit import AuditTrail, VerificationResult, verify_chain
from opendso.service.config import ServiceSettings
from opendso.service.controlroom import ControlRoom
from opendso.service.security import Permission, Role, Security, ensure_admin

__all__ = [
    "AuditTrail",
    "ControlRoom",
    "Permission",
    "Role",
    "Security",
    "ServiceSettings",
    "VerificationResult",
    "create_app",
    "ensure_admin",
    "schematic_layout",
    "verify_chain",
]

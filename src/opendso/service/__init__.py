"""The control-room service: FastAPI app, users and roles, the audit trail and the runtime behind them."""

from opendso.service.app import ServiceSettings, create_app
from opendso.service.audit import AuditTrail, VerificationResult, audit_verify_command, verify_chain
from opendso.service.controlroom import ControlRoom, schematic_layout
from opendso.service.security import Permission, Role, Security, ensure_admin, users_command

__all__ = [
    "AuditTrail",
    "ControlRoom",
    "Permission",
    "Role",
    "Security",
    "ServiceSettings",
    "VerificationResult",
    "audit_verify_command",
    "create_app",
    "ensure_admin",
    "schematic_layout",
    "users_command",
    "verify_chain",
]

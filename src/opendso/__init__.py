"""OpenDSO: the open platform a distribution system operator runs its grid on."""

from opendso.errors import (
    CalculationError,
    GridSourceError,
    GridValidationError,
    InputError,
    OpenDSOError,
)

__version__ = "0.1.0"

__all__ = [
    "CalculationError",
    "GridSourceError",
    "GridValidationError",
    "InputError",
    "OpenDSOError",
    "__version__",
]

"""Exceptions raised by OpenDSO.

Every error OpenDSO raises on purpose derives from :class:`OpenDSOError`::

    OpenDSOError
    ├── InputError                 bad input: exit status 2 on the command line
    │   ├── GridSourceError        a grid source cannot be read (unknown code, missing or malformed file)
    │   └── GridValidationError    a grid was read but its data are inconsistent (lists every finding)
    └── CalculationError           a calculation failed for a reason other than bad input
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opendso.grid.validation import Finding


class OpenDSOError(Exception):
    """Root of every error OpenDSO raises on purpose."""

    exit_code = 1


class InputError(OpenDSOError):
    """Bad input from a user: a file, a source name, an element or a field."""

    exit_code = 2


@dataclass
class GridSourceError(InputError):
    """A grid source cannot be read.

    ``source`` is the source string or file, ``element`` and ``field`` narrow down where the
    problem is when they are known.
    """

    source: str
    message: str
    element: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.element is not None:
            where += f", element {self.element}"
        if self.field is not None:
            where += f", field {self.field}"
        return f"{where}: {self.message}"


class GridValidationError(InputError):
    """A grid's data are inconsistent; ``findings`` lists every problem found."""

    def __init__(self, grid_name: str, findings: Sequence[Finding]) -> None:
        self.grid_name = grid_name
        self.findings = list(findings)
        lines = [f"{grid_name}: {len(self.findings)} problem(s) in the grid data"]
        lines += [f"  - {finding}" for finding in self.findings]
        super().__init__("\n".join(lines))


class CalculationError(OpenDSOError):
    """A calculation could not be carried out."""

"""Exceptions raised by OpenDSO: the one tree, rooted at :class:`OpenDSOError`.

Every error OpenDSO raises on purpose is defined here and derives from :class:`OpenDSOError`
(a test walks the package to keep it so)::

    OpenDSOError                       exit status 1 on the command line
    ├── InputError                     bad input: exit status 2; nothing stored was changed
    │   ├── GridSourceError            a grid source cannot be read (unknown code, missing or malformed file)
    │   ├── GridValidationError        a grid was read but its data are inconsistent (lists every finding)
    │   ├── PointMapError              a point map cannot be used (lists every finding)
    │   ├── ScenarioError              a scenario cannot be run (lists every finding)
    │   ├── MeasurementFileError       a measurement file is malformed (file, row, field)
    │   ├── OutageFileError            an outage CSV is malformed (file, row, field)
    │   ├── DerFileError               a DER registry CSV is malformed (file, and row and field of every problem)
    │   ├── OrderBookFileError         a local market's order book CSV is malformed (every problem, row and field)
    │   ├── WeatherFileError           a weather file for the forecasts is malformed (file, row, field)
    │   ├── SettingsError              an environment variable has a wrong value (names it)
    │   ├── CommandError               the field simulator refuses a command; nothing was applied
    │   │   ├── NotCommandableError    the point is unknown or takes no commands
    │   │   └── CommandValueError      the point takes commands, but not this value
    │   ├── AlarmStateError            an operator action that does not fit the alarm's state
    │   ├── StoreInputError            a measurement or event is malformed; nothing of the batch was stored
    │   │   └── UnknownPointError      a batch names points never registered (lists them)
    │   ├── IntegrityKeyMissingError   the integrity key is missing while sealed data exist
    │   ├── UnknownUserError           a user name that does not exist
    │   ├── NotFoundError              the control room does not know the id, key or point (HTTP 404)
    │   │   └── UnknownSwitchError     a switching request names a switch the grid does not have
    │   ├── ConflictError              a request that does not fit the present state (HTTP 409)
    │   └── UnsupportedMediaError      a body of a media type the endpoint does not take (HTTP 415)
    ├── CalculationError               a calculation failed for a reason other than bad input
    ├── StoreError                     the database could not carry out a request
    │   └── StoreUnavailableError      the database cannot be reached (the write path buffers instead)
    ├── IntegrityError                 sealed data do not match their seal: changed outside OpenDSO
    ├── AuthError                      not authenticated (HTTP 401)
    ├── ThrottledError                 too many attempts: wait (HTTP 429 with Retry-After)
    ├── ForbiddenError                 the roles do not allow the action (HTTP 403)
    ├── RemoteError                    a control room refused a request or could not be reached
    └── AsduError                      octets that do not form an IEC 104 ASDU of a known structure

Findings (what :class:`GridValidationError`, :class:`PointMapError` and :class:`ScenarioError`
list) are typed by their shape here, so this base module imports nothing of OpenDSO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "AlarmStateError",
    "AsduError",
    "AuthError",
    "CalculationError",
    "CommandError",
    "CommandValueError",
    "ConflictError",
    "DerFileError",
    "FileFinding",
    "ForbiddenError",
    "GridFinding",
    "GridSourceError",
    "GridValidationError",
    "InputError",
    "IntegrityError",
    "IntegrityKeyMissingError",
    "MeasurementFileError",
    "NotCommandableError",
    "NotFoundError",
    "OpenDSOError",
    "OrderBookFileError",
    "OutageFileError",
    "PointMapError",
    "RemoteError",
    "ScenarioError",
    "SettingsError",
    "StoreError",
    "StoreInputError",
    "StoreUnavailableError",
    "ThrottledError",
    "UnknownPointError",
    "UnknownSwitchError",
    "UnknownUserError",
    "UnsupportedMediaError",
    "WeatherFileError",
]


class GridFinding(Protocol):
    """One problem in the grid data, as :class:`GridValidationError` lists it.

    Typed by its shape, so this base module imports nothing of the grid package;
    :class:`opendso.grid.validation.Finding` is the implementation.
    """

    @property
    def component(self) -> str:
        """The power-grid-model component (``line``, ``node``, ...)."""
        ...

    @property
    def field(self) -> str:
        """The attribute that is wrong."""
        ...

    @property
    def ids(self) -> tuple[int, ...]:
        """The ids of the elements concerned."""
        ...

    @property
    def message(self) -> str:
        """What is wrong."""
        ...


class FileFinding(Protocol):
    """One problem in an input file, as :class:`PointMapError` and :class:`ScenarioError` list it.

    :class:`opendso.telemetry.points.PointMapFinding` and
    :class:`opendso.telemetry.scenario.ScenarioFinding` are the implementations; ``str()`` gives
    the file, the place in it and the message.
    """

    @property
    def file(self) -> str:
        """The file (or ``<...>`` for data not read from a file)."""
        ...

    @property
    def field(self) -> str | None:
        """The field that is wrong, when one is."""
        ...

    @property
    def message(self) -> str:
        """What is wrong."""
        ...


def _listing(where: str, what: str, findings: Sequence[object]) -> str:
    """The message of an error that lists findings: a count, then one finding per line."""
    return "\n".join([f"{where}: {len(findings)} problem(s) in {what}", *(f"  - {f}" for f in findings)])


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

    def __init__(self, grid_name: str, findings: Sequence[GridFinding]) -> None:
        self.grid_name = grid_name
        self.findings = list(findings)
        super().__init__(_listing(grid_name, "the grid data", self.findings))


class CalculationError(OpenDSOError):
    """A calculation could not be carried out."""


class PointMapError(InputError):
    """A point map cannot be used; ``findings`` lists every problem found."""

    def __init__(self, file: str, findings: Iterable[FileFinding]) -> None:
        self.file = file
        self.findings = list(findings)
        super().__init__(_listing(file, "the point map", self.findings))


class ScenarioError(InputError):
    """A scenario cannot be run; ``findings`` lists every problem found."""

    def __init__(self, file: str, findings: Iterable[FileFinding]) -> None:
        self.file = file
        self.findings = list(findings)
        super().__init__(_listing(file, "the scenario", self.findings))


def _located(path: str, row: int | None, field: str | None) -> str:
    """``path``, then ``, row N`` and ``, field 'F'`` where known: where in a file a problem is."""
    where = path
    if row is not None:
        where += f", row {row}"
    if field is not None:
        where += f", field {field!r}"
    return where


def _problem_lines(path: str, problems: Sequence[tuple[int | None, str | None, str]], most: int = 50) -> str:
    """One line per problem (at most ``most``, then how many more), each saying where it is."""
    lines = [f"{_located(path, row, field)}: {message}" for row, field, message in problems[:most]]
    if len(problems) > most:
        lines.append(f"... and {len(problems) - most} more problem(s)")
    return "\n".join(lines)


class MeasurementFileError(InputError):
    """A measurement file is malformed: names the file, the data row (1-based) and the field."""

    def __init__(self, path: Path | str, message: str, *, row: int | None = None, field: str | None = None) -> None:
        self.path = str(path)
        self.row = row
        self.field = field
        self.message = message
        super().__init__(f"{_located(self.path, row, field)}: {message}")


class OutageFileError(InputError):
    """An outage CSV is malformed: names the file, the data row (1-based) and the field."""

    def __init__(self, path: Path | str, message: str, *, row: int | None = None, field: str | None = None) -> None:
        self.path = str(path)
        self.row = row
        self.field = field
        self.message = message
        super().__init__(f"{_located(self.path, row, field)}: {message}")


class DerFileError(InputError):
    """A DER registry CSV is malformed: ``problems`` holds (row, field, message) of every problem.

    Rows are the 1-based data rows (the header is row 0); nothing of the file was stored.
    """

    def __init__(self, path: Path | str, problems: Sequence[tuple[int | None, str | None, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(_problem_lines(self.path, self.problems))


class OrderBookFileError(InputError):
    """A local market's order book CSV is malformed: ``problems`` holds (row, field, message) of every problem."""

    def __init__(self, path: Path | str, problems: Sequence[tuple[int | None, str | None, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(_problem_lines(self.path, self.problems))


class WeatherFileError(InputError):
    """A weather file for the forecasts is malformed: names the file, the data row (1-based) and the field."""

    def __init__(self, path: Path | str, message: str, *, row: int | None = None, field: str | None = None) -> None:
        self.path = str(path)
        self.row = row
        self.field = field
        self.message = message
        super().__init__(f"{_located(self.path, row, field)}: {message}")


class SettingsError(InputError):
    """An environment variable has a wrong value; the message names the variable and what is wrong."""


class CommandError(InputError):
    """A command the twin cannot apply (see the subclasses); nothing of it was applied."""


class NotCommandableError(CommandError):
    """The point is unknown, or takes no commands (a measurement, an indicator)."""


class CommandValueError(CommandError):
    """The point takes commands, but not this value (a switch takes 0 or 1)."""


class AlarmStateError(InputError):
    """An operator action that does not fit the alarm's present state (e.g. shelving a normal alarm)."""


class StoreInputError(InputError):
    """A measurement or an event is malformed; nothing of the batch was stored."""


class UnknownPointError(StoreInputError):
    """A batch names points that were never registered; ``names`` lists every one of them."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        shown = ", ".join(repr(n) for n in self.names[:20])
        more = f" (and {len(self.names) - 20} more)" if len(self.names) > 20 else ""
        super().__init__(
            f"unknown point(s) {shown}{more}: register them with Historian.register_points() first; "
            "nothing of the batch was stored"
        )


class IntegrityKeyMissingError(InputError):
    """The integrity key file is missing while the database holds data sealed with a key."""


class UnknownUserError(InputError):
    """A user name that does not exist (``opendso users``)."""


class NotFoundError(InputError):
    """An id, alarm key or point the control room does not know (HTTP 404)."""


class UnknownSwitchError(NotFoundError):
    """A switching request names a switch the grid does not have; ``switch`` is the name given."""

    def __init__(self, switch: str) -> None:
        self.switch = switch
        super().__init__(f"unknown switch {switch!r}")


class ConflictError(InputError):
    """The request is well formed but does not fit the present state (HTTP 409)."""


class UnsupportedMediaError(InputError):
    """A body of a media type the endpoint does not take (HTTP 415)."""


class StoreError(OpenDSOError):
    """The database could not carry out a request."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached."""


class IntegrityError(OpenDSOError):
    """Sealed data does not match its seal: it was changed outside OpenDSO."""


class AuthError(OpenDSOError):
    """Not authenticated: no, an unknown or an expired session, or a failed login (HTTP 401).

    ``presented``: a token was given but is not (or no longer) valid: forged, revoked or
    expired. Those are audited as refused access; a request without any token is not.
    """

    def __init__(self, message: str, *, presented: bool = False) -> None:
        super().__init__(message)
        self.presented = presented


class ThrottledError(OpenDSOError):
    """Too many attempts: wait ``retry_after_s`` seconds (HTTP 429 with ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))


class ForbiddenError(OpenDSOError):
    """Authenticated, but the roles do not allow the action, or the CSRF token is missing (HTTP 403)."""


class RemoteError(OpenDSOError):
    """The control room refused a request or could not be reached (exit status 1; 2 for bad input)."""


class AsduError(OpenDSOError, ValueError):
    """Octets that do not form an IEC 60870-5-104 ASDU of a known structure (also a ValueError)."""

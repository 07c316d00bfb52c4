"""Errors of the historian and the event log.

::

    OpenDSOError
    ├── InputError
    │   └── StoreInputError        a measurement or event is malformed (naive time, bad value, bad payload)
    │       └── UnknownPointError  a batch names points the historian does not know (lists them all)
    └── StoreError                 the database could not do what was asked
        └── StoreUnavailableError  the database cannot be reached (the write path buffers instead)
"""

from __future__ import annotations

from collections.abc import Iterable

from opendso.errors import InputError, OpenDSOError


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


class StoreError(OpenDSOError):
    """The database could not carry out a request."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached."""

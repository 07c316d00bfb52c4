"""The control room's runtime behind the web service: :class:`ControlRoom` and its parts.

:class:`ControlRoom` (:mod:`.room`) is the facade the app and ``opendso run`` use; it composes

- :mod:`.views`: what the API serves (grid drawing, elements, state, alarm list, trends);
- :mod:`.fanout`: the WebSocket fan-out (an :class:`Outbox` per client, conflated);
- :mod:`.actions`: what people do (alarm actions, designed suppression, shift notes, trainer);
- :mod:`.journal`: views of the event log (events, shift notes, alarm journal and figures).

The graph layout of grids without geography is the grid's: :mod:`opendso.grid.layout`.
"""

from opendso.errors import ConflictError, NotFoundError
from opendso.grid.layout import schematic_layout
from opendso.service.controlroom.actions import MAX_REASON
from opendso.service.controlroom.fanout import Outbox
from opendso.service.controlroom.journal import MAX_JOURNAL_SCAN, SHIFT_NOTE, TRANSITIONS
from opendso.service.controlroom.room import ControlRoom
from opendso.service.controlroom.views import PRIORITIES

__all__ = [
    "MAX_JOURNAL_SCAN",
    "MAX_REASON",
    "PRIORITIES",
    "SHIFT_NOTE",
    "TRANSITIONS",
    "ConflictError",
    "ControlRoom",
    "NotFoundError",
    "Outbox",
    "schematic_layout",
]

"""Storage: the historian (measurements), the event log, their schema and migrations.

SQLite (WAL) in the data folder is the embedded default; PostgreSQL is selected by a
``postgresql+psycopg://`` URL. Open with :meth:`Historian.open`, which creates or upgrades the
schema.
"""

from opendso.errors import StoreError, StoreInputError, StoreUnavailableError, UnknownPointError
from opendso.measurement import Measurement
from opendso.store.buffer import DiskBuffer
from opendso.store.engine import data_dir, default_database_url
from opendso.store.events import Event, EventLog
from opendso.store.historian import Historian, WriteResult
from opendso.store.quality import Quality

__all__ = [
    "DiskBuffer",
    "Event",
    "EventLog",
    "Historian",
    "Measurement",
    "Quality",
    "StoreError",
    "StoreInputError",
    "StoreUnavailableError",
    "UnknownPointError",
    "WriteResult",
    "data_dir",
    "default_database_url",
]

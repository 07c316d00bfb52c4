"""The one SQLAlchemy :class:`~sqlalchemy.MetaData` every table of the store registers on.

It lives in its own module so that the table modules (:mod:`opendso.store.schema`,
:mod:`opendso.store.security_schema`) import it without importing each other. The collection
is complete once :mod:`opendso.store.schema` is imported (it imports the security tables);
use ``opendso.store.schema.metadata`` when all tables must be there (migrations, schema tests).
"""

from __future__ import annotations

import sqlalchemy as sa

#: Every table of OpenDSO's database.
metadata = sa.MetaData()

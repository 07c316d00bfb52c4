"""The ``opendso`` command.

Grid sources are named as everywhere in OpenDSO: ``simbench:<code>``, ``pandapower:<file.json>``,
``opendss:<master.dss>``, ``pgm:<file.json>`` or ``demo``. Results go to stdout (``--json`` for
one JSON object), progress and errors to stderr. Bad input exits with status 2 and one message
naming the file, element and field.

One module per command group: :mod:`~opendso.cli.grid` (``grid``), :mod:`~opendso.cli.calc`
(``powerflow``, ``timeseries``, ``estimate``, ``shortcircuit``), :mod:`~opendso.cli.realtime`
(``points``, ``monitor``, ``simulate-field``), :mod:`~opendso.cli.history`,
:mod:`~opendso.cli.users`, :mod:`~opendso.cli.audit`, :mod:`~opendso.cli.run` and
:mod:`~opendso.cli.trainer`; :mod:`~opendso.cli.command` builds the parser and maps errors to
exit statuses. This package is the only part of OpenDSO that prints.
"""

from opendso.cli.command import build_parser, main

__all__ = ["build_parser", "main"]

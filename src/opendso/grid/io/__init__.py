"""Grid file formats: readers into a :class:`~opendso.grid.model.Grid` and writers out of one.

One module per format and direction; each takes or returns a whole grid and raises
:class:`~opendso.errors.GridSourceError` (reading) or :class:`~opendso.errors.InputError`
(writing) naming the file, the element and the field:

- :mod:`~opendso.grid.io.pandapower_reader`: a pandapower network (SimBench's too) into a grid;
- :mod:`~opendso.grid.io.pandapower_writer`: a grid into a pandapower network or its JSON file;
- :mod:`~opendso.grid.io.opendss_reader`: an OpenDSS circuit (``master.dss``), compiled by the
  OpenDSS engine, into a grid;
- :mod:`~opendso.grid.io.pgm_json`: power-grid-model's JSON input format, both ways;
- :mod:`~opendso.grid.io.atomic`: the atomic file write the writers share.

Grid sources by name (``simbench:``, ``pandapower:``, ``opendss:``, ``pgm:``, ``demo``) are
:func:`opendso.grid.load_grid`'s job (:mod:`opendso.grid.sources`), which dispatches to these.
"""

from opendso.grid.io.opendss_reader import read_opendss
from opendso.grid.io.pandapower_reader import from_pandapower
from opendso.grid.io.pandapower_writer import to_pandapower, write_pandapower_json
from opendso.grid.io.pgm_json import read_pgm_json, write_pgm_json

__all__ = [
    "from_pandapower",
    "read_opendss",
    "read_pgm_json",
    "to_pandapower",
    "write_pandapower_json",
    "write_pgm_json",
]

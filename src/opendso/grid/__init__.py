"""The network model, its sources, file formats (:mod:`opendso.grid.io`), validation and topology."""

from opendso.grid.io import (
    from_pandapower,
    read_opendss,
    read_pgm_json,
    to_pandapower,
    write_pandapower_json,
    write_pgm_json,
)
from opendso.grid.model import Grid, ProfileAssignment, Profiles
from opendso.grid.sources import load_grid
from opendso.grid.topology import Topology, analyse_topology, path_from_source
from opendso.grid.validation import Finding, assert_valid, validate_grid

__all__ = [
    "Finding",
    "Grid",
    "ProfileAssignment",
    "Profiles",
    "Topology",
    "analyse_topology",
    "assert_valid",
    "from_pandapower",
    "load_grid",
    "path_from_source",
    "read_opendss",
    "read_pgm_json",
    "to_pandapower",
    "validate_grid",
    "write_pandapower_json",
    "write_pgm_json",
]

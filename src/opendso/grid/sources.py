"""Grid sources by name: ``simbench:<code>``, ``pandapower:<file.json>``, ``opendss:<master.dss>``,
``pgm:<file.json>`` and ``demo``.

:func:`load_grid` is the one entry point the command line, the service and the tests use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import sys
import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import Any

from opendso.errors import GridSourceError
from opendso.grid.model import Grid
from opendso.settings import get_settings

#: The built-in grid behind ``demo``: a SimBench MV grid with its LV grids, coordinates and a
#: year of profiles, shipped inside the simbench package (no download at run time).
DEMO_SIMBENCH_CODE = "1-MVLV-semiurb-5.220-0-sw"

SCHEMES = ("simbench", "pandapower", "opendss", "pgm", "demo")

log = logging.getLogger(__name__)


def split_source(source: str) -> tuple[str, str]:
    """Split ``scheme:argument``; raise a clear error for an unknown scheme."""
    if source == "demo":
        return "demo", ""
    scheme, sep, argument = source.partition(":")
    if not sep or scheme not in SCHEMES or not argument:
        raise GridSourceError(
            source,
            "unknown grid source; expected one of simbench:<code>, pandapower:<file.json>, "
            "opendss:<master.dss>, pgm:<file.json> or demo",
        )
    return scheme, argument


def load_grid(source: str) -> Grid:
    """Return the grid named by a source string (see the module docstring)."""
    scheme, argument = split_source(source)
    if scheme == "demo":
        grid = load_simbench(DEMO_SIMBENCH_CODE)
        return _renamed(grid, "demo")
    if scheme == "simbench":
        return load_simbench(argument)
    path = Path(argument)
    if not path.is_file():
        raise GridSourceError(source, f"file not found: {argument}")
    if scheme == "pandapower":
        return load_pandapower_file(path, source)
    if scheme == "pgm":
        from opendso.grid.io.pgm_json import read_pgm_json

        return read_pgm_json(path, source)
    from opendso.grid.io.opendss_reader import read_opendss

    return read_opendss(path, source)


def _renamed(grid: Grid, name: str) -> Grid:
    from dataclasses import replace

    return replace(grid, name=name)


@cache
def simbench_codes() -> frozenset[str]:
    """Every grid code the installed simbench package ships."""
    import simbench

    return frozenset(simbench.collect_all_simbench_codes())


def load_simbench_net(code: str) -> Any:
    """Return the pandapower network of a SimBench code (with profiles), or raise a clear error."""
    if code not in simbench_codes():
        raise GridSourceError(f"simbench:{code}", "unknown SimBench code (see `opendso grid list-simbench`)")
    import simbench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simbench.get_simbench_net(code)


def cache_dir() -> Path | None:
    """Folder for converted grids (``OPENDSO_CACHE_DIR``, else the user cache folder); None when disabled.

    ``OPENDSO_CACHE_DIR=off`` disables the cache.
    """
    return get_settings().folders.cache_folder()


def _converter_fingerprint() -> str:
    """Changes whenever the converter, the model layout or a library version changes."""
    import power_grid_model
    import simbench

    from opendso.grid import model
    from opendso.grid.io import pandapower_reader

    digest = hashlib.sha256()
    for module in (model, pandapower_reader):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(f"{simbench.__version__} {power_grid_model.__version__} {sys.version_info[:2]}".encode())
    return digest.hexdigest()[:16]


def load_simbench(code: str) -> Grid:
    """Return a SimBench grid with its profiles, measurement placements and coordinates.

    Reading SimBench's CSV files takes seconds; the converted grid is kept in the cache folder
    (see :func:`cache_dir`), keyed by the converter's fingerprint, so later loads take a
    fraction of a second. A damaged cache file is ignored and rewritten.
    """
    from opendso.grid.io.pandapower_reader import from_pandapower

    folder = cache_dir()
    path = folder / f"simbench-{code}-{_converter_fingerprint()}.pickle" if folder is not None else None
    if path is not None and path.is_file():
        try:
            with path.open("rb") as fh:
                grid = pickle.load(fh)
            if isinstance(grid, Grid) and grid.name == f"simbench:{code}":
                return grid
        except Exception as exc:  # a truncated or stale cache file is rebuilt, never trusted
            log.warning("event=cache_unreadable path=%s error=%s", path, exc)
    net = load_simbench_net(code)
    grid = from_pandapower(net, name=f"simbench:{code}")
    if path is not None:
        _write_cache(path, grid)
    return grid


def _write_cache(path: Path, grid: Grid) -> None:
    """Write a cache file atomically; a cache that cannot be written is only logged."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(grid, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("event=cache_not_written path=%s error=%s", path, exc)


def load_pandapower_file(path: Path, source: str) -> Grid:
    """Read a pandapower JSON file."""
    import pandapower

    from opendso.grid.io.pandapower_reader import from_pandapower

    try:
        json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GridSourceError(source, f"malformed JSON: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = pandapower.from_json(str(path))
    except Exception as exc:  # pandapower raises many types for a file that is JSON but no network
        raise GridSourceError(source, f"not a pandapower network: {exc}") from None
    if "bus" not in net or "line" not in net:
        raise GridSourceError(source, "not a pandapower network (no bus table)")
    return from_pandapower(net, name=source, source=source)

"""What every command group of the ``opendso`` command shares: JSON output, progress, grids, times.

Results go to stdout (``--json``: one JSON object, NaN refused, numpy values as plain numbers),
progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opendso.errors import InputError
from opendso.timeutil import parse_time

if TYPE_CHECKING:
    from opendso.grid import Grid

#: The object ``add_subparsers`` returns, to which each command group adds its commands.
type Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

#: A time given on the command line without a zone is read as UTC, as the ``--help`` texts say
#: (``opendso timeseries --start``, ``opendso history --from``). Everywhere else OpenDSO refuses
#: naive times (:func:`opendso.timeutil.parse_time`); set False to refuse them here too.
NAIVE_TIME_IS_UTC = True


def emit_json(payload: Any) -> None:
    """Print ``payload`` as one JSON object on stdout (numpy scalars and arrays as plain values)."""
    json.dump(payload, sys.stdout, allow_nan=False, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@contextmanager
def progress(enabled: bool, description: str) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a ``(done, total)`` callback drawing a rich progress bar on stderr (None when disabled or no terminal)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def load_valid_grid(source: str, *, validate: bool = True, symmetric: bool = True) -> Grid:
    """Return the grid of ``source``; raise :class:`~opendso.errors.GridValidationError` when it is not valid."""
    from opendso.grid import assert_valid, load_grid

    grid = load_grid(source)
    if validate:
        assert_valid(grid, symmetric=symmetric)
    return grid


def parse_cli_time(text: str, flag: str) -> datetime:
    """Return the aware UTC time of ``text`` given to ``flag`` (ISO 8601; see :data:`NAIVE_TIME_IS_UTC`).

    Raises :class:`InputError` naming the flag and the text when it is not a time.
    """
    try:
        return parse_time(text, flag)
    except InputError as refused:
        if not NAIVE_TIME_IS_UTC:
            raise
        try:
            naive = datetime.fromisoformat(text.strip())
        except ValueError:
            raise refused from None
        return naive.replace(tzinfo=UTC)

"""The field simulator's DER model: an export limit per generator, with a watchdog and a fail-safe limit.

Every generator of the twin (``sym_gen``) can take an export limit on its ``p_limit`` point (W):
its output is ``min(available, limit in force)``, where *available* is what the profile (and
the scenario's factors, and any ``p`` set-point) gives it. What the DER does:

- **Range.** A limit is a finite number in 0..the generator's rating (``DerSettings.rating_w``;
  by default the generator's ``p_specified`` in the grid's input, its installed power). Anything
  else (NaN, infinite, negative, above the rating) is refused
  (:class:`~opendso.errors.CommandValueError`), whoever writes it: the protocol server answers
  with its negative confirmation (Modbus exception 04, IEC 104 P/N = 1) and nothing changes.
- **Watchdog.** Once a limit has been written, the DER expects a write (a new limit, or the same
  one again as a heartbeat) at least every ``watchdog_s`` seconds of simulated time. When none
  comes, it applies its fail-safe export limit: ``min(last limit, fail_safe_w)`` (it never exports
  more on a lost link than it was allowed before), until a fresh write comes. A generator never
  written has no limit (its rating) and no watchdog armed.
- **Read-back.** ``p_limit`` reports the limit in force (the fail-safe one while it applies, the
  rating when there is none; a generator never written is not limited at all),
  ``p_available`` (read-only) the available power, so a controller
  can account curtailed energy as ``available - output``.

:func:`der_points` adds ``p_limit`` and ``p_available`` points for some generators to a point
map: Modbus float32 registers in W, SunSpec-style (one block per DER, the commandable limit in
holding registers, the available power in input registers); IEC 104 short floats (M_ME_NC_1),
the limit commanded with the set-point C_SE_NC_1 at its command address.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from opendso.errors import CommandValueError, InputError
from opendso.grid.model import Grid
from opendso.telemetry.points import QUANTITIES, Point, PointMap

__all__ = ["DerControls", "DerSettings", "DerState", "der_points"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DerSettings:
    """How one DER behaves: its watchdog time, fail-safe export limit and rating.

    ``watchdog_s``: simulated seconds a written limit stands without a refresh; ``fail_safe_w``:
    the export limit it falls back to (e.g. a flexible agreement's ``export_limit_kw`` x 1000);
    ``rating_w``: the most it can export (None: the generator's ``p_specified`` in the grid).
    """

    watchdog_s: float = 60.0
    fail_safe_w: float = 0.0
    rating_w: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.watchdog_s) and self.watchdog_s > 0):
            raise InputError(f"DER settings: watchdog_s must be > 0, got {self.watchdog_s!r}")
        if not (math.isfinite(self.fail_safe_w) and self.fail_safe_w >= 0):
            raise InputError(f"DER settings: fail_safe_w must be >= 0, got {self.fail_safe_w!r}")
        if self.rating_w is not None and not (math.isfinite(self.rating_w) and self.rating_w > 0):
            raise InputError(f"DER settings: rating_w must be > 0, got {self.rating_w!r}")


@dataclass(frozen=True)
class DerState:
    """One DER as the twin holds it at one instant (all in W; ``limit_w`` None: never written)."""

    generator: str
    rating_w: float
    limit_w: float | None
    in_force_w: float
    fail_safe: bool
    last_write_s: float | None
    watchdog_s: float
    fail_safe_w: float


class DerControls:
    """The export limits of a twin's generators (arrays by generator row); see the module docstring.

    ``grid``: the twin's grid; ``settings``: per generator name (others get ``default``).
    """

    def __init__(
        self, grid: Grid, settings: Mapping[str, DerSettings] | None = None, default: DerSettings | None = None
    ) -> None:
        names = [str(n) for n in grid.names_of("sym_gen")]
        self.names = names
        self.row = {n: k for k, n in enumerate(names)}
        n = len(names)
        self.default = default or DerSettings()
        self.installed = np.abs(np.asarray(grid.component("sym_gen")["p_specified"], dtype=float)) if n else np.zeros(0)
        self.rating = np.zeros(n)
        self.watchdog = np.zeros(n)
        self.fail_safe = np.zeros(n)
        for k in range(n):
            self._set(k, self.default)
        for name, each in (settings or {}).items():
            self.configure(name, each)
        self.limit = np.full(n, np.nan)  # NaN: never written
        self.last_write = np.full(n, np.nan)  # simulated seconds of the last write
        self._expired = np.zeros(n, dtype=bool)

    def _set(self, k: int, settings: DerSettings) -> None:
        rating = settings.rating_w if settings.rating_w is not None else float(self.installed[k])
        self.rating[k] = rating if rating > 0 else math.inf
        self.watchdog[k] = settings.watchdog_s
        self.fail_safe[k] = settings.fail_safe_w

    def configure(self, generator: str, settings: DerSettings) -> None:
        """Set the watchdog, fail-safe limit and rating of ``generator`` (InputError when unknown)."""
        k = self.row.get(generator)
        if k is None:
            raise InputError(f"DER settings: no generator {generator!r} in the grid")
        self._set(k, settings)

    # -- commands ------------------------------------------------------------------------------------
    def check(self, generator: str, value: float) -> int:
        """The row of ``generator`` when ``value`` is a limit it takes; raise :class:`CommandValueError` otherwise."""
        k = self.row[generator]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise CommandValueError(f"export limit of {generator!r} must be a finite number of W, got {value!r}")
        rating = float(self.rating[k])
        if not 0.0 <= value <= rating * (1 + 1e-6):  # float32 on the wire rounds by up to 6e-8
            raise CommandValueError(f"export limit {value:g} W of {generator!r} is outside 0..{rating:g} W")
        return k

    def write(self, generator: str, value: float, elapsed_s: float) -> None:
        """Take a limit (or the heartbeat of the same one) at ``elapsed_s``; the watchdog restarts."""
        k = self.check(generator, value)
        self.limit[k] = float(value)
        self.last_write[k] = float(elapsed_s)
        if self._expired[k]:
            log.info("event=sim_der_failsafe_end generator=%s limit_w=%g", generator, value)
        self._expired[k] = False

    # -- time ------------------------------------------------------------------------------------------
    def update(self, elapsed_s: float) -> bool:
        """Apply the watchdog at ``elapsed_s``: True when a DER went to its fail-safe limit."""
        if not self.names:
            return False
        armed = np.isfinite(self.last_write)
        expired = armed & (elapsed_s - np.where(armed, self.last_write, 0.0) > self.watchdog)
        new = expired & ~self._expired
        for k in np.flatnonzero(new).tolist():
            log.warning(
                "event=sim_der_failsafe generator=%s fail_safe_w=%g last_write_s=%g elapsed_s=%g",
                self.names[k],
                self.fail_safe[k],
                self.last_write[k],
                elapsed_s,
            )
        self._expired = expired
        return bool(new.any())

    def in_force(self) -> npt.NDArray[np.float64]:
        """The export limit in force per generator (the rating when none is; the fail-safe one when it applies)."""
        limit = np.where(np.isfinite(self.limit), self.limit, self.rating)
        return np.where(self._expired, np.minimum(limit, self.fail_safe), limit)

    def apply(self, available: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The output per generator: ``min(available, limit in force)`` (a negative available is kept).

        A generator never written is not limited at all (not even by its rating: the scenario's
        PV scaling may take it beyond).
        """
        limit = np.where(np.isfinite(self.limit), self.limit, np.inf)
        return np.minimum(available, np.where(self._expired, np.minimum(limit, self.fail_safe), limit))

    def state(self, generator: str) -> DerState:
        """The DER of ``generator`` as held now (KeyError when unknown)."""
        k = self.row[generator]
        limit = float(self.limit[k])
        last = float(self.last_write[k])
        return DerState(
            generator,
            float(self.rating[k]),
            limit if math.isfinite(limit) else None,
            float(self.in_force()[k]),
            bool(self._expired[k]),
            last if math.isfinite(last) else None,
            float(self.watchdog[k]),
            float(self.fail_safe[k]),
        )


def der_points(
    point_map: PointMap,
    generators: Iterable[str],
    *,
    source: str | None = None,
    register: int | None = None,
    ioa: int | None = None,
) -> PointMap:
    """Return ``point_map`` with ``<generator>/p_limit`` and ``<generator>/p_available`` points added.

    ``source``: the connection they are served on (default: the map's only Modbus or IEC 104
    connection). Modbus: float32 in W, one block per DER from ``register`` (default: after the
    last register used): the limit in a holding register pair, the available power in the next
    pair of the input table. IEC 104: M_ME_NC_1 from ``ioa`` (default: after the last address
    used), the limit commanded with C_SE_NC_1 at its command address.
    """
    if source is None:
        served = [s for s in point_map.sources.values() if s.protocol in ("modbus", "iec104")]
        if len(served) != 1:
            raise InputError(f"{point_map.file}: name the source for the DER points (modbus or iec104)")
        source = served[0].name
    connection = point_map.sources.get(source)
    if connection is None or connection.protocol not in ("modbus", "iec104"):
        raise InputError(f"{point_map.file}: source {source!r} is not a modbus or iec104 connection")
    mine = point_map.points_of(source)
    added: list[Point] = []
    if connection.protocol == "modbus":
        at = register
        if at is None:
            at = max((p.register + p.register_count for p in mine if p.register is not None), default=0)
        group = next(iter(connection.poll_groups), "default")
        for gen in generators:
            for quantity, table in (("p_limit", "holding"), ("p_available", "input")):
                added.append(
                    Point(
                        f"{gen}/{quantity}",
                        gen,
                        quantity,
                        QUANTITIES[quantity],
                        source,
                        register=at,
                        table=table,
                        data_type="float32",
                        poll_group=group,
                    )
                )
                at += 2
    else:
        at = ioa if ioa is not None else max((p.ioa or 0 for p in mine), default=0) + 1
        for gen in generators:
            for quantity in ("p_limit", "p_available"):
                added.append(
                    Point(
                        f"{gen}/{quantity}",
                        gen,
                        quantity,
                        QUANTITIES[quantity],
                        source,
                        common_address=connection.common_address,
                        ioa=at,
                        type="M_ME_NC_1",
                    )
                )
                at += 1
    return replace(point_map, points=(*point_map.points, *added))

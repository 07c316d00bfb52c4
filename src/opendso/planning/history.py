"""Measured-like history of loads and generators: the grid's year profiles with realistic noise.

The forecasters train on, and the backtests score against, a history of active power per load
and generator. Where the historian holds no such measurements (a study grid, a test), the history
comes from the grid's own year profiles (SimBench ships one year of quarter-hours): the profile
value of each element, times a multiplicative noise that is an AR(1) process in time, so that
consecutive quarter-hours deviate together as real measurements do (weather, behaviour) and a
day or a week ago tells only part of the story. Generation is clipped at zero and is exactly
zero wherever its profile is zero (night stays dark).

Values are in watts, as the element's own sign convention: consumed P for a load, produced P for
a generator (power-grid-model's ``p_specified`` of ``sym_load`` and ``sym_gen``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from opendso.errors import InputError
from opendso.grid.model import Grid

if TYPE_CHECKING:
    from opendso.store.historian import Historian
    from opendso.telemetry.points import PointMap
from opendso.planning.model import TARGET_COMPONENTS, target_name

__all__ = [
    "AGGREGATE_LEVELS",
    "NOISE_AR1",
    "aggregate_history",
    "historian_history",
    "profile_history",
    "profile_times",
    "target_kinds",
]

log = logging.getLogger(__name__)

#: The aggregate levels :func:`aggregate_history` knows, in the order it adds them.
AGGREGATE_LEVELS = ("node", "feeder", "substation")

#: Lag-one autocorrelation of the relative noise per quarter-hour: deviations persist for hours
#: (e-folding time about 2.4 h), as weather- and behaviour-driven deviations of real feeders do.
NOISE_AR1 = 0.9


def profile_history(
    grid: Grid,
    *,
    noise: float = 0.1,
    seed: int | None = 0,
    components: Sequence[str] = ("sym_load", "sym_gen"),
    start: int = 0,
    stop: int | None = None,
) -> pd.DataFrame:
    """Realistic 'measured' active power per load and generator from the grid's year profiles.

    Returns a DataFrame indexed by a UTC :class:`~pandas.DatetimeIndex` at the profiles' step
    (15 minutes for SimBench), one column per target named ``target_name(component, element
    name)`` (elements sharing a name, such as the parts of one split load, are summed), values in
    W: a load's consumed P, a generator's produced P. Each value is the profile value times
    ``1 + e`` where ``e`` is an AR(1) process per column with lag-one correlation
    :data:`NOISE_AR1` and stationary standard deviation ``noise``; generation is clipped at zero
    and stays zero where the profile is zero. ``start``/``stop`` select profile steps (all by
    default); ``seed`` makes the noise reproducible (``None``: fresh noise).

    :class:`InputError` naming the grid when it has no profiles, when ``noise`` is negative or
    not finite, for an unknown component, or for an empty step range.
    """
    profiles = grid.profiles
    if profiles is None or profiles.steps == 0:
        raise InputError(f"grid {grid.name!r} has no profiles: no history to forecast from")
    if not np.isfinite(noise) or noise < 0:
        raise InputError(f"history noise must be a finite number >= 0, got {noise}")
    for component in components:
        if component not in TARGET_COMPONENTS:
            raise InputError(f"history: component must be one of {TARGET_COMPONENTS}, got {component!r}")
    stop = profiles.steps if stop is None else min(int(stop), profiles.steps)
    if not 0 <= start < stop:
        raise InputError(f"history of grid {grid.name!r}: empty step range {start}:{stop} of {profiles.steps}")
    chunk = profiles.values[start:stop]
    if seed is not None and seed < 0:
        raise InputError(f"history seed must be >= 0, got {seed}")
    root = int(seed) if seed is not None else int(np.random.default_rng().integers(2**62))
    frames: list[pd.DataFrame] = []
    for number, component in enumerate(components):
        if grid.count(component) == 0:
            continue
        ids = np.asarray(grid.component(component)["id"], dtype=np.int64)
        values = _element_power(grid, component, ids, chunk)
        stream = (root, TARGET_COMPONENTS.index(component), number)
        noisy = values * (1.0 + _ar1_noise(stream, profiles.steps, start, stop, values.shape[1], noise))
        if component == "sym_gen":
            noisy = np.where(values > 0.0, np.maximum(noisy, 0.0), 0.0)
        names = [target_name(component, str(n)) for n in grid.names_of(component)]
        frame = pd.DataFrame(noisy, columns=pd.Index(names))
        if frame.columns.has_duplicates:
            frame = frame.T.groupby(level=0, sort=False).sum().T
        frames.append(frame)
    if not frames:
        raise InputError(f"grid {grid.name!r} has no {' or '.join(components)} to give a history of")
    index = profile_times(grid)[start:stop]
    history = pd.concat(frames, axis=1)
    history.index = index
    log.debug(
        "event=profile_history grid=%s steps=%d targets=%d noise=%g", grid.name, len(index), history.shape[1], noise
    )
    return history


def profile_times(grid: Grid) -> pd.DatetimeIndex:
    """The UTC start of every profile step of ``grid``: a regular range from the first time at the profiles' step.

    SimBench's profile times are wall-clock times of a zone with daylight saving (an hour
    missing in March, one repeated in October) while the rows are consecutive quarter-hours;
    so when the times are not strictly increasing at one step, the rows are counted from the
    first time (taken as UTC) at the most common step. Profile step ``k`` is at
    ``profile_times(grid)[k]``. :class:`InputError` when the grid has no profiles.
    """
    profiles = grid.profiles
    if profiles is None or profiles.steps == 0:
        raise InputError(f"grid {grid.name!r} has no profiles: no history to forecast from")
    seconds = profiles.time.astype("datetime64[s]").astype(np.int64)
    steps = np.diff(seconds)
    if steps.size == 0:
        step = 900
    else:
        values, counts = np.unique(steps, return_counts=True)
        step = int(values[np.argmax(counts)])
    if step <= 0:
        raise InputError(f"grid {grid.name!r}: profile times do not advance")
    first = pd.Timestamp(int(seconds[0]), unit="s", tz="UTC")
    return pd.date_range(first, periods=profiles.steps, freq=pd.Timedelta(seconds=step), name="time")


def _element_power(
    grid: Grid, component: str, ids: npt.NDArray[np.int64], chunk: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """(T, n) active power of every element of ``component`` in input order; constant where no profile applies."""
    base = np.asarray(grid.component(component)["p_specified"], dtype=float)
    base = np.where(np.isfinite(base), base, 0.0)
    out = np.broadcast_to(base, (chunk.shape[0], ids.size)).copy()
    for assignment in grid.profiles.assignments if grid.profiles is not None else ():
        if assignment.component != component or assignment.attribute != "p_specified":
            continue
        rows = np.searchsorted(ids, assignment.ids, sorter=np.argsort(ids))
        rows = np.argsort(ids)[rows]
        out[:, rows] = assignment.evaluate(chunk)
    return out


def _ar1_noise(
    stream: tuple[int, ...], steps: int, start: int, stop: int, columns: int, std: float
) -> npt.NDArray[np.float64]:
    """(stop - start, columns) rows of stationary AR(1) noise (lag-one correlation :data:`NOISE_AR1`, std ``std``).

    Each column is one series over all ``steps`` of the profiles drawn from its own random
    stream (``stream`` + column number), so a step range is the same slice of the same year
    whatever range is asked for: training and forecasting see the same "measurements".
    """
    out = np.zeros((stop - start, columns))
    if std == 0.0:
        return out
    from scipy.signal import lfilter

    phi = NOISE_AR1
    block = 256  # columns per block: bounded memory for grids of thousands of elements
    for first in range(0, columns, block):
        cols = range(first, min(first + block, columns))
        draws = np.stack([np.random.default_rng([*stream, c]).standard_normal(steps + 1) for c in cols], axis=1)
        innovations = draws[1:] * std * np.sqrt(1.0 - phi * phi)
        state = draws[0] * std  # the state before the first step, drawn stationary
        series, _ = lfilter([1.0], [1.0, -phi], innovations[:stop], axis=0, zi=(phi * state)[None, :])
        out[:, first : first + len(cols)] = series[start:stop]
    return out


def aggregate_history(
    grid: Grid, history: pd.DataFrame, *, levels: Sequence[str] = ("node", "feeder", "substation")
) -> pd.DataFrame:
    """Net demand per node, feeder and substation (W): loads minus generation of the elements behind it.

    ``history`` holds element columns named by :func:`~opendso.planning.model.target_name`
    (others are ignored); the result has one column per aggregate that has at least one element,
    named ``node:NAME``, ``feeder:NAME`` (the feeder name of :mod:`opendso.grid.topology`) and
    ``substation:NAME``; a feeder or substation sums the elements on its nodes (a node beyond a
    transformer counts to the feeders of its own substation, and to that substation).
    :class:`InputError` for an unknown level.
    """
    from opendso.grid.topology import analyse_topology

    for level in levels:
        if level not in AGGREGATE_LEVELS:
            raise InputError(f"aggregate level must be one of {AGGREGATE_LEVELS}, got {level!r}")
    node_names = grid.names_of("node")
    topology = analyse_topology(grid) if {"feeder", "substation"} & set(levels) else None
    rows: dict[str, list[str]] = {}
    signs: dict[str, float] = {}
    for component, sign in (("sym_load", 1.0), ("sym_gen", -1.0)):
        if grid.count(component) == 0:
            continue
        names = grid.names_of(component)
        positions = grid.node_positions(grid.component(component)["node"])
        for name, position in zip(names, positions, strict=True):
            column = target_name(component, str(name))
            if column not in history.columns:
                continue
            signs[column] = sign
            keys = []
            if "node" in levels:
                keys.append(f"node:{node_names[position]}")
            if topology is not None and "feeder" in levels:
                feeder = int(topology.node_feeder[position])
                if feeder >= 0:
                    row = int(np.flatnonzero(topology.feeders.id == feeder)[0])
                    keys.append(f"feeder:{topology.feeders.name[row]}")
            if topology is not None and "substation" in levels:
                substation = int(topology.node_substation[position])
                feeder = int(topology.node_feeder[position])
                if substation < 0 and feeder >= 0:
                    substation = int(topology.feeders.substation[np.flatnonzero(topology.feeders.id == feeder)[0]])
                if substation >= 0:
                    row = int(np.flatnonzero(topology.substations.id == substation)[0])
                    keys.append(f"substation:{topology.substations.name[row]}")
            for key in keys:
                rows.setdefault(key, []).append(column)
    ordered = sorted(rows, key=lambda k: (AGGREGATE_LEVELS.index(k.partition(":")[0]), k))
    data = {
        key: history[rows[key]].to_numpy() @ np.asarray([signs[c] for c in rows[key]], dtype=float) for key in ordered
    }
    return pd.DataFrame(data, index=history.index)


def target_kinds(grid: Grid, targets: Sequence[str]) -> dict[str, str]:
    """The kind of each target: ``load``, ``pv``, ``generation``, ``node``, ``feeder``, ``substation``.

    A generator is ``pv`` when the grid says so (its ``kind`` or its profile names PV).
    :class:`InputError` for a target of no known form.
    """
    kinds: dict[str, str] = {}
    gen_kind: dict[str, str] = {}
    if grid.count("sym_gen"):
        extra = grid.extra.get("sym_gen", {})
        kind = extra.get("kind")
        profile = extra.get("profile")
        for row, name in enumerate(grid.names_of("sym_gen")):
            text = " ".join(str(a[row]) for a in (kind, profile) if a is not None).lower()
            gen_kind[str(name)] = "pv" if "pv" in text else "generation"
    for target in targets:
        prefix, sep, name = target.partition(":")
        if not sep or not name:
            raise InputError(f"forecast target {target!r} is not COMPONENT:NAME or LEVEL:NAME")
        if prefix == "sym_load":
            kinds[target] = "load"
        elif prefix == "sym_gen":
            kinds[target] = gen_kind.get(name, "generation")
        elif prefix in AGGREGATE_LEVELS:
            kinds[target] = prefix
        else:
            raise InputError(f"forecast target {target!r}: unknown kind {prefix!r}")
    return kinds


def historian_history(
    historian: Historian, point_map: PointMap, grid: Grid, start: datetime, end: datetime
) -> pd.DataFrame:
    """Measured active power per load and generator from the historian, as 15-minute means in W.

    Every point of quantity ``p`` whose element is a ``sym_load`` or ``sym_gen`` of ``grid``
    gives the column ``target_name(component, element)`` (a load's point measures consumption, a
    generator's production: power-grid-model's reference directions of appliance power sensors).
    Values flagged invalid are left out; a quarter-hour without any value is NaN. The index is
    the quarter-hours from ``start`` (rounded down) to before ``end``, UTC. :class:`InputError`
    when the point map binds no such point to the grid.
    """
    step = timedelta(minutes=15)
    first = pd.Timestamp(start).tz_convert("UTC").floor(step)
    index = pd.date_range(first, pd.Timestamp(end).tz_convert("UTC") - pd.Timedelta(1, "us"), freq=step, name="time")
    columns: dict[str, pd.Series] = {}
    known = historian.point_ids()
    for point in point_map.points:
        if point.quantity != "p":
            continue
        try:
            component, _ = grid.find(point.element)
        except KeyError:
            continue
        if component not in TARGET_COMPONENTS:
            continue
        if point.name not in known:
            continue
        means = historian.aggregate(point.name, first.to_pydatetime(), pd.Timestamp(end).to_pydatetime(), step)
        series = pd.Series(means["mean"].to_numpy(), index=pd.DatetimeIndex(means["start"]).tz_convert("UTC"))
        name = target_name(component, point.element)
        columns[name] = series.reindex(index) if name not in columns else columns[name].add(series.reindex(index))
    if not columns:
        raise InputError(f"{point_map.file}: no 'p' point of a load or generator of {grid.name!r} in the historian")
    return pd.DataFrame(columns, index=index)

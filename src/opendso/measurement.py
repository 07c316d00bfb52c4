"""One measured value of one point: the record that flows from the field adapters to the historian.

:class:`Measurement` is the one record of a value: adapters hand them out, the historian stores
them, the real-time cycle reads them. :class:`LatestValues` keeps the latest measurement of each
point of a fixed list (a point map's, in its order) in arrays indexed by point index, so that
the real-time path gathers and scatters values by index instead of looking names up every cycle;
it is also a read-only mapping of point name -> :class:`Measurement` for callers that want
records.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt

from opendso.quality import Quality
from opendso.timeutil import to_epoch_us

__all__ = ["LatestValues", "Measurement"]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One value of one point at one time.

    ``value`` is in the point's SI unit (after scaling); with quality INVALID it is the number
    that arrived when one did (e.g. out of range) and NaN otherwise; with STALE it is the last
    value received. ``time`` is timezone-aware (stored as UTC; the historian rejects a naive
    one, naming it). ``quality`` is the :class:`~opendso.quality.Quality` bit set (0 is good);
    ``sequence`` is the source's sequence number of the telegram or message, when it has one.
    """

    point: str
    time: datetime
    value: float
    quality: int = Quality.GOOD
    sequence: int | None = None

    @property
    def is_good(self) -> bool:
        """True when the quality is good and the value finite."""
        return self.quality == 0 and math.isfinite(self.value)


#: Up to this many points of a batch are written one by one; more go in as one vectorised write.
_SCALAR_WRITES = 8
_NO_POINTS: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
_NO_POINTS.flags.writeable = False  # shared by every update that changed nothing


class LatestValues(Mapping[str, Measurement]):
    """The latest measurement of every point of ``names``, in arrays indexed by point index.

    ``value`` (NaN until received), ``quality``, ``sequence`` (-1 for none) and ``received``
    are numpy arrays, ``times`` the list of source times (None until received), each holding a
    point's latest measurement; treat them as read-only and change them through
    :meth:`update`. Of two measurements of one point the one with the later source time wins
    (an equal time: the one that came last). Measurements of points not in ``names`` are kept
    as records in ``others``. Updates and :meth:`snapshot` are thread-safe: a snapshot holds
    whole batches, never half of one.

    As a mapping it holds point name -> :class:`Measurement` for every point received (points
    of ``names`` in index order, then the others); building the records costs a little per
    point, so the real-time path reads the arrays.
    """

    def __init__(self, names: Sequence[str]) -> None:
        """Keep the latest values of the points ``names`` (unique; their order is the point index)."""
        self.names: tuple[str, ...] = tuple(names)
        self.index: dict[str, int] = {}
        for k, name in enumerate(self.names):
            if name in self.index:
                raise ValueError(f"point {name!r} is listed twice")
            self.index[name] = k
        n = len(self.names)
        self.value: npt.NDArray[np.float64] = np.full(n, np.nan)
        self.quality: npt.NDArray[np.int64] = np.zeros(n, dtype=np.int64)
        self.sequence: npt.NDArray[np.int64] = np.full(n, -1, dtype=np.int64)
        self.received: npt.NDArray[np.bool_] = np.zeros(n, dtype=bool)
        self.times: list[datetime | None] = [None] * n
        self.others: dict[str, Measurement] = {}
        self._lock = threading.Lock()

    # -- updates -----------------------------------------------------------------------------------
    def update(self, batch: Iterable[Measurement]) -> npt.NDArray[np.int64]:
        """Take the measurements of a batch; per point the latest source time wins.

        Return the indices of the points whose value or quality the batch changed, in no
        particular order (a point's first value is a change; a value repeated with the same
        quality, or a measurement older than the one held, is not; NaN equals NaN). Points not
        in ``names`` are never in it. A naive time raises :class:`~opendso.errors.InputError`;
        what came before it in the batch is kept.
        """
        index, times, others = self.index, self.times, self.others
        newest: dict[int, Measurement] = {}  # per point index, the batch's latest
        with self._lock:
            try:
                for m in batch:
                    t = m.time
                    if t.tzinfo is None:
                        to_epoch_us(t)  # raises the one error for a naive time
                    k = index.get(m.point)
                    if k is None:
                        old = others.get(m.point)
                        if old is None or t >= old.time:
                            others[m.point] = m
                        continue
                    last = times[k]
                    if last is None or t >= last:
                        times[k] = t
                        newest[k] = m
            finally:
                changed = self._write(newest)
        return changed

    def _write(self, newest: Mapping[int, Measurement]) -> npt.NDArray[np.int64]:
        """Write the accepted measurements into the arrays (under the lock); return the points that changed."""
        if not newest:
            return _NO_POINTS
        if len(newest) <= _SCALAR_WRITES:
            changed: list[int] = []
            for k, m in newest.items():
                old, value = float(self.value[k]), m.value
                same = old == value or (math.isnan(old) and math.isnan(value))
                if not (same and self.received[k] and self.quality[k] == m.quality):
                    changed.append(k)
                self.value[k] = value
                self.quality[k] = m.quality
                self.sequence[k] = -1 if m.sequence is None else m.sequence
                self.received[k] = True
            return np.array(changed, dtype=np.int64)
        at = np.fromiter(newest.keys(), dtype=np.int64, count=len(newest))
        records = list(newest.values())
        values = np.array([m.value for m in records], dtype=np.float64)
        qualities = np.array([m.quality for m in records], dtype=np.int64)
        before = self.value[at]
        same = (
            self.received[at]
            & (self.quality[at] == qualities)
            & ((before == values) | (np.isnan(before) & np.isnan(values)))
        )
        self.value[at] = values
        self.quality[at] = qualities
        self.sequence[at] = [-1 if m.sequence is None else m.sequence for m in records]
        self.received[at] = True
        changed_at: npt.NDArray[np.int64] = at[~same]
        return changed_at

    def clear(self) -> None:
        """Forget every measurement."""
        with self._lock:
            self.value[:] = np.nan
            self.quality[:] = 0
            self.sequence[:] = -1
            self.received[:] = False
            self.times[:] = [None] * len(self.names)
            self.others.clear()

    def snapshot(self) -> LatestValues:
        """Return a copy that later updates do not change (for a cycle to read while values arrive)."""
        copy = LatestValues.__new__(LatestValues)
        copy.names, copy.index = self.names, self.index
        copy._lock = threading.Lock()
        with self._lock:
            copy.value = self.value.copy()
            copy.quality = self.quality.copy()
            copy.sequence = self.sequence.copy()
            copy.received = self.received.copy()
            copy.times = list(self.times)
            copy.others = dict(self.others)
        return copy

    # -- reading -----------------------------------------------------------------------------------
    def good(self) -> npt.NDArray[np.bool_]:
        """Per point: received with good quality (0) and a finite value."""
        good: npt.NDArray[np.bool_] = self.received & (self.quality == 0) & np.isfinite(self.value)
        return good

    def counts(self) -> tuple[int, int]:
        """Return (measurements held, of which with good quality), the other points' included."""
        held = int(np.count_nonzero(self.received)) + len(self.others)
        good = int(np.count_nonzero(self.received & (self.quality == 0)))
        return held, good + sum(1 for m in list(self.others.values()) if m.quality == 0)

    def _record(self, k: int) -> Measurement:
        seq = int(self.sequence[k])
        time = self.times[k]
        assert time is not None  # received
        return Measurement(self.names[k], time, float(self.value[k]), int(self.quality[k]), None if seq < 0 else seq)

    def __getitem__(self, name: str) -> Measurement:
        k = self.index.get(name)
        if k is None:
            return self.others[name]
        if not self.received[k]:
            raise KeyError(name)
        return self._record(k)

    def __contains__(self, name: object) -> bool:
        k = self.index.get(name) if isinstance(name, str) else None
        return bool(self.received[k]) if k is not None else name in self.others

    def __iter__(self) -> Iterator[str]:
        for k in np.flatnonzero(self.received).tolist():
            yield self.names[k]
        yield from list(self.others)

    def __len__(self) -> int:
        return int(np.count_nonzero(self.received)) + len(self.others)

    def __repr__(self) -> str:
        return f"LatestValues({len(self)} of {len(self.names)} points received, {len(self.others)} others)"

    @classmethod
    def of(cls, names: Sequence[str], measurements: Mapping[str, Measurement] | Iterable[Measurement]) -> LatestValues:
        """Return the latest values of ``names`` holding ``measurements``: records, or point name -> record.

        In a mapping the key names the point (a record filed under another name counts for the key).
        """
        latest = cls(names)
        if isinstance(measurements, Mapping):
            latest.update(m if m.point == key else replace(m, point=key) for key, m in measurements.items())
        else:
            latest.update(measurements)
        return latest

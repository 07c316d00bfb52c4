"""One measured value of one point: the record that flows from the field adapters to the historian."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from opendso.quality import Quality

__all__ = ["Measurement"]


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

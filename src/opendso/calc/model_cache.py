"""power-grid-model models kept between state estimations on the same grid and sensor layout.

Building a model and its topology costs about a third of an estimation on a 10,000-node grid.
A real-time cycle estimates the same grid with the same sensors every few seconds and only the
measured values change, so :class:`ModelCache` keeps the model and sends the new values as an
update. The estimate is the same as on a fresh model (the estimator starts from a flat voltage
either way; ``tests/test_estimation_tolerance.py`` compares them).

A kept model is reused only when

- the grid's input arrays hold exactly the values it was built from (a grid changed in place is
  never estimated on a stale model), with the same system frequency;
- the sensors have the same component types, ids, measured objects, terminals and angle types,
  and the same fields missing (NaN): power-grid-model reads NaN in an update as "unchanged".

A model is taken out of the cache while in use, so two estimations never share one; a model
whose update fails is dropped. At most ``size`` models are kept, the least recently used go.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from threading import Lock

import numpy as np
from numpy.lib.recfunctions import repack_fields
from power_grid_model import PowerGridModel, initialize_array
from power_grid_model.errors import PowerGridError

#: Sensor fields that say where a sensor sits and what it is; the others are values and sigmas.
_STRUCTURE_FIELDS = ("id", "measured_object", "measured_terminal_type", "angle_measurement_type")


def _packed_bytes(array: np.ndarray) -> np.ndarray:
    """The values of a structured array as bytes, fields packed (padding bytes are not values)."""
    packed = repack_fields(np.ascontiguousarray(array))
    return np.ascontiguousarray(packed).view(np.uint8)


def _layout(sensors: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per sensor component: the structure fields (copied) and a finite mask of every value field."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for component in sorted(sensors):
        array = sensors[component]
        fields: dict[str, np.ndarray] = {}
        for name in array.dtype.names or ():
            column = array[name]
            if name in _STRUCTURE_FIELDS:
                fields[name] = column.copy()
            elif column.dtype.kind == "f":
                fields[name] = np.isfinite(column)
        out[component] = fields
    return out


def _same_layout(a: Mapping[str, Mapping[str, np.ndarray]], b: Mapping[str, Mapping[str, np.ndarray]]) -> bool:
    if list(a) != list(b):
        return False
    for component, fields in a.items():
        other = b[component]
        if list(fields) != list(other):
            return False
        if not all(np.array_equal(fields[name], other[name]) for name in fields):
            return False
    return True


@dataclass(eq=False)
class KeptModel:
    """A model with what it was built from: the grid's input values (packed bytes) and the sensor layout."""

    model: PowerGridModel
    grid_input: dict[str, tuple[np.dtype[np.void], np.ndarray]]  # per component: dtype and packed bytes
    frequency_hz: float
    layout: dict[str, dict[str, np.ndarray]]

    @classmethod
    def build(
        cls, grid_input: Mapping[str, np.ndarray], sensors: Mapping[str, np.ndarray], frequency_hz: float
    ) -> KeptModel:
        """Build a model of ``grid_input`` with ``sensors``; raises power-grid-model's error for bad input."""
        data = dict(grid_input)
        data.update(sensors)
        model = PowerGridModel(data, system_frequency=frequency_hz)
        packed = {c: (a.dtype, _packed_bytes(a)) for c, a in grid_input.items()}
        return cls(model, packed, frequency_hz, _layout(sensors))

    def fits(
        self, grid_input: Mapping[str, np.ndarray], frequency_hz: float, layout: Mapping[str, Mapping[str, np.ndarray]]
    ) -> bool:
        """Whether this model holds ``grid_input`` and a sensor set of ``layout``."""
        if frequency_hz != self.frequency_hz or list(grid_input) != list(self.grid_input):
            return False
        for component, array in grid_input.items():
            dtype, packed = self.grid_input[component]
            if array.dtype != dtype or not np.array_equal(_packed_bytes(array), packed):
                return False
        return _same_layout(layout, self.layout)


class ModelCache:
    """Models kept for reuse, at most ``size``, least recently used first out; safe across threads."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._kept: OrderedDict[int, KeptModel] = OrderedDict()
        self._lock = Lock()

    def take(
        self, grid_input: Mapping[str, np.ndarray], sensors: Mapping[str, np.ndarray], frequency_hz: float
    ) -> KeptModel | None:
        """Return a kept model of this grid and sensor layout, updated with the sensors' values, or None.

        The model leaves the cache: give it back with :meth:`keep` when done.
        """
        layout = _layout(sensors)
        with self._lock:
            found = next((k for k, kept in self._kept.items() if kept.fits(grid_input, frequency_hz, layout)), None)
            kept = self._kept.pop(found) if found is not None else None
        if kept is None:
            return None
        update = {}
        for component, array in sensors.items():
            values = initialize_array("update", component, array.size)
            for name in values.dtype.names or ():
                values[name] = array[name]
            update[component] = values
        try:
            kept.model.update(update_data=update)
        except PowerGridError:
            return None  # dropped: the caller builds a fresh model
        return kept

    def keep(self, kept: KeptModel) -> None:
        """Put a model (back) into the cache as the most recently used."""
        if self.size <= 0:
            return
        with self._lock:
            self._kept[id(kept)] = kept
            self._kept.move_to_end(id(kept))
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)

    def clear(self) -> None:
        """Drop every kept model (and the memory it holds)."""
        with self._lock:
            self._kept.clear()

"""Calculations on a grid through power-grid-model: power flow, time series, state estimation, short circuit.

The modules, one job each: :mod:`~opendso.calc.powerflow`, :mod:`~opendso.calc.timeseries`,
:mod:`~opendso.calc.shortcircuit`; for state estimation :mod:`~opendso.calc.estimation` (the
estimator and its result), :mod:`~opendso.calc.bad_data` (normalised residuals and suspects),
:mod:`~opendso.calc.sensors` (measurement sets, accuracy classes, pseudo-measurements),
:mod:`~opendso.calc.synthesis` (measurements made from a power flow, for the simulator),
:mod:`~opendso.calc.placement` (sensor placement at a chosen redundancy) and
:mod:`~opendso.calc.measurement_file` (the CSV/JSON measurement reader). Import the public names
from here.
"""

from opendso.calc.estimation import EstimationMethod, EstimationResult, run_state_estimation
from opendso.calc.measurement_file import read_measurements
from opendso.calc.placement import place_measurements
from opendso.calc.powerflow import PowerFlowMethod, PowerFlowResult, run_power_flow
from opendso.calc.sensors import (
    DEFAULT_ACCURACY,
    Accuracy,
    Measurements,
    combine_measurements,
    pseudo_measurements,
)
from opendso.calc.shortcircuit import Case, FaultType, ShortCircuitResult, run_short_circuit
from opendso.calc.synthesis import measurements_from_power_flow
from opendso.calc.timeseries import ParquetWriter, TimeSeriesResult, ViolationLimits, run_time_series
from opendso.errors import MeasurementFileError

__all__ = [  # noqa: RUF022 - plainly sorted, as tests/test_exported_members.py pins every package's surface
    "Accuracy",
    "Case",
    "DEFAULT_ACCURACY",
    "EstimationMethod",
    "EstimationResult",
    "FaultType",
    "MeasurementFileError",
    "Measurements",
    "ParquetWriter",
    "PowerFlowMethod",
    "PowerFlowResult",
    "ShortCircuitResult",
    "TimeSeriesResult",
    "ViolationLimits",
    "combine_measurements",
    "measurements_from_power_flow",
    "place_measurements",
    "pseudo_measurements",
    "read_measurements",
    "run_power_flow",
    "run_short_circuit",
    "run_state_estimation",
    "run_time_series",
]

"""Calculations on a grid through power-grid-model: power flow, time series, state estimation, short circuit."""

from opendso.calc.estimation import EstimationResult, read_measurements, run_state_estimation
from opendso.calc.powerflow import Method, PowerFlowResult, run_power_flow
from opendso.calc.shortcircuit import Case, FaultType, ShortCircuitResult, run_short_circuit
from opendso.calc.timeseries import Limits, ParquetWriter, TimeSeriesResult, run_time_series

__all__ = [
    "Case",
    "EstimationResult",
    "FaultType",
    "Limits",
    "Method",
    "ParquetWriter",
    "PowerFlowResult",
    "ShortCircuitResult",
    "TimeSeriesResult",
    "read_measurements",
    "run_power_flow",
    "run_short_circuit",
    "run_state_estimation",
    "run_time_series",
]

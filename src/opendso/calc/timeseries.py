"""Time-series power flow: a year of quarter-hours as chunked, multi-threaded batch calls.

The grid's relative profiles are scaled per element chunk by chunk (never a year x elements
table in memory), each chunk is one power-grid-model batch call asking only for the attributes
the summary needs (node ``u_pu``, branch ``loading``), and every step reports whether it
converged and, if not, why. Full results of chosen components can be streamed to Parquet chunk
by chunk, so memory stays bounded whatever the number of steps.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from power_grid_model import CalculationMethod, PowerGridModel
from power_grid_model.errors import PowerGridBatchError, PowerGridError

from opendso.calc.powerflow import PowerFlowMethod
from opendso.errors import CalculationError, InputError
from opendso.grid.model import Grid

#: Components whose loading enters the per-step maximum loading.
LOADING_COMPONENTS: tuple[str, ...] = (
    "line",
    "transformer",
    "three_winding_transformer",
    "asym_line",
    "generic_branch",
)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ViolationLimits:
    """Voltage and loading limits a time series counts violations against, per step (not alarm limits)."""

    u_min_pu: float = 0.9
    u_max_pu: float = 1.1
    loading_max: float = 1.0


@dataclass
class TimeSeriesResult:
    """Per-step summary of a time-series run (arrays of one value per step)."""

    grid_name: str
    time: npt.NDArray[np.datetime64]
    converged: npt.NDArray[np.bool_]
    fallback: npt.NDArray[np.bool_]
    u_min_pu: npt.NDArray[np.float64]
    u_max_pu: npt.NDArray[np.float64]
    max_loading: npt.NDArray[np.float64]
    voltage_violations: npt.NDArray[np.int64]
    overloads: npt.NDArray[np.int64]
    errors: dict[int, str] = field(default_factory=dict)
    limits: ViolationLimits = field(default_factory=ViolationLimits)

    @property
    def steps(self) -> int:
        """Number of steps run."""
        return int(self.converged.size)

    def to_dict(self, *, with_steps: bool = True) -> dict[str, Any]:
        """Return the summary as a JSON-ready dict (totals, then one record per step)."""
        ok = self.converged
        out: dict[str, Any] = {
            "grid": self.grid_name,
            "steps": self.steps,
            "converged_steps": int(ok.sum()),
            "failed_steps": int((~ok).sum()),
            "fallback_steps": int(self.fallback.sum()),
            "u_min_pu": float(np.nanmin(self.u_min_pu)) if ok.any() else None,
            "u_max_pu": float(np.nanmax(self.u_max_pu)) if ok.any() else None,
            "max_loading": float(np.nanmax(self.max_loading)) if ok.any() else None,
            "steps_with_voltage_violations": int((self.voltage_violations > 0).sum()),
            "steps_with_overloads": int((self.overloads > 0).sum()),
            "limits": {
                "u_min_pu": self.limits.u_min_pu,
                "u_max_pu": self.limits.u_max_pu,
                "loading_max": self.limits.loading_max,
            },
        }
        if with_steps:
            out["per_step"] = [
                {
                    "step": i,
                    "time": str(np.datetime_as_string(self.time[i], unit="s")) + "Z" if self.time.size else None,
                    "converged": bool(self.converged[i]),
                    "fallback": bool(self.fallback[i]),
                    "u_min_pu": _f(self.u_min_pu[i]),
                    "u_max_pu": _f(self.u_max_pu[i]),
                    "max_loading": _f(self.max_loading[i]),
                    "voltage_violations": int(self.voltage_violations[i]),
                    "overloads": int(self.overloads[i]),
                    "error": self.errors.get(i),
                }
                for i in range(self.steps)
            ]
        return out


def _f(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


class ParquetWriter:
    """Streams full per-step results of chosen components to a Parquet file, written atomically.

    Rows are (step, time, component, id, name, value); the file appears under its final name
    only when the run completes, so an interrupted or failed run leaves no half-written file.
    """

    def __init__(self, path: Path, grid: Grid, components: Sequence[str] = ("node", "line", "transformer")) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self.path = Path(path)
        self.components = tuple(c for c in components if grid.count(c))
        self.grid = grid
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise InputError(f"{self.path}: folder {folder} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        self._tmp = Path(tmp)
        schema = pa.schema(
            [
                ("step", pa.int32()),
                ("time", pa.timestamp("s", tz="UTC")),
                ("component", pa.dictionary(pa.int8(), pa.string())),
                ("id", pa.int32()),
                ("name", pa.dictionary(pa.int32(), pa.string())),
                ("value", pa.float64()),
            ]
        )
        self._schema = schema
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        self._names = {c: pa.array(grid.names_of(c).astype(str)) for c in self.components}

    def quantity(self, component: str) -> str:
        """The result attribute written for a component."""
        return "u_pu" if component == "node" else "loading"

    def write(self, start: int, time: np.ndarray, output: dict[str, Any]) -> None:
        """Append one chunk of results (``output`` holds columnar arrays of shape (steps, elements))."""
        pa = self._pa
        tables = []
        for component in self.components:
            values = output[component][self.quantity(component)]
            n_steps, n = values.shape
            ids = self.grid.component(component)["id"]
            steps = np.repeat(np.arange(start, start + n_steps, dtype=np.int32), n)
            times = (
                np.repeat(time[:n_steps].astype("datetime64[s]"), n) if time.size else np.zeros(n_steps * n, "M8[s]")
            )
            names = self._names[component]
            indices = pa.array(np.tile(np.arange(n, dtype=np.int32), n_steps))
            tables.append(
                pa.table(
                    {
                        "step": steps,
                        "time": pa.array(times, type=pa.timestamp("s", tz="UTC")),
                        "component": pa.DictionaryArray.from_arrays(
                            pa.array(np.zeros(n_steps * n, np.int8)), pa.array([component])
                        ),
                        "id": np.tile(ids, n_steps),
                        "name": pa.DictionaryArray.from_arrays(indices, names),
                        "value": values.reshape(-1),
                    },
                    schema=self._schema,
                )
            )
        for table in tables:
            self._writer.write_table(table)

    def commit(self) -> None:
        """Close the file and move it to its final name."""
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._writer.close()
        finally:
            self._tmp.unlink(missing_ok=True)


def run_time_series(
    grid: Grid,
    *,
    start: int = 0,
    stop: int | None = None,
    method: PowerFlowMethod | str = PowerFlowMethod.ITERATIVE_CURRENT,
    symmetric: bool = True,
    chunk_size: int | None = None,
    threading: int = 0,
    error_tolerance: float = 1e-8,
    max_iterations: int = 30,
    limits: ViolationLimits | None = None,
    fallback_linear: bool = False,
    writer: ParquetWriter | None = None,
    progress: ProgressCallback | None = None,
) -> TimeSeriesResult:
    """Run the grid's profiles from step ``start`` to ``stop`` and return the per-step summary.

    The default method is iterative current: power-grid-model factorises the admittance matrix
    once per batch and reuses it for every step, which is several times faster than
    Newton-Raphson when only loads and generation change, and converges to the same solution
    within ``error_tolerance``. Steps it does not solve are re-run with Newton-Raphson. Steps
    that still do not converge are reported (``converged`` false, ``errors[step]`` the reason);
    with ``fallback_linear`` they are re-run with the linear method and marked in ``fallback``.

    ``chunk_size`` (steps per batch call) defaults to what keeps one chunk's update and output
    data near 64 MB.
    """
    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles")
    profiles = grid.profiles
    stop = profiles.steps if stop is None else stop
    if not 0 <= start < stop <= profiles.steps:
        raise InputError(f"{grid.name}: steps {start}..{stop} outside the profile range 0..{profiles.steps}")
    limits = limits or ViolationLimits()
    method = PowerFlowMethod(method)
    n = stop - start
    converged = np.ones(n, dtype=bool)
    fallback = np.zeros(n, dtype=bool)
    u_min = np.full(n, np.nan)
    u_max = np.full(n, np.nan)
    max_loading = np.full(n, np.nan)
    v_viol = np.zeros(n, dtype=np.int64)
    overloads = np.zeros(n, dtype=np.int64)
    errors: dict[int, str] = {}

    model = PowerGridModel(grid.pgm_input(), system_frequency=grid.frequency_hz)
    input_ids = {c: grid.component(c)["id"] for c in {a.component for a in profiles.assignments}}
    loading_components = [c for c in LOADING_COMPONENTS if grid.count(c)]
    wanted: dict[str, Any] = {"node": ["u_pu", "energized"]}
    wanted.update({c: ["loading", "energized"] for c in loading_components})
    if writer is not None:
        wanted.update({c: [writer.quantity(c), "energized"] for c in writer.components if c not in wanted})
    if chunk_size is None:
        per_step = 8 * sum(a.ids.size for a in profiles.assignments)
        per_step += 9 * sum(grid.count(c) * (3 if not symmetric else 1) for c in wanted)
        chunk_size = int(np.clip(64e6 // max(per_step, 1), 64, 4096))
    attempts = [method] if method is not PowerFlowMethod.ITERATIVE_CURRENT else [method, PowerFlowMethod.NEWTON_RAPHSON]
    if fallback_linear:
        attempts.append(PowerFlowMethod.LINEAR)

    done = 0
    try:
        for chunk_start in range(start, stop, chunk_size):
            chunk_stop = min(chunk_start + chunk_size, stop)
            update = profiles.update_data(chunk_start, chunk_stop, input_ids=input_ids)
            out, failed = _calculate(
                model, update, attempts[0], symmetric, threading, error_tolerance, max_iterations, wanted
            )
            rows = slice(chunk_start - start, chunk_stop - start)
            for retry in attempts[1:]:
                if not failed:
                    break
                idx = np.array(sorted(failed), dtype=np.int64)
                sub = {c: {k: v[idx] for k, v in cols.items()} for c, cols in update.items()}
                again, still = _calculate(
                    model, sub, retry, symmetric, threading, error_tolerance, max_iterations, wanted
                )
                solved = np.array([k not in still for k in range(idx.size)], dtype=bool)
                for c in out:
                    for attr in out[c]:
                        out[c][attr][idx[solved]] = again[c][attr][solved]
                if retry is PowerFlowMethod.LINEAR:
                    # the linear method always solves: the step is marked as a fallback, and the
                    # reason the iterative methods failed is kept
                    for row in np.flatnonzero(solved):
                        step = int(idx[row])
                        fallback[chunk_start - start + step] = True
                        errors[chunk_start - start + step] = f"linear fallback after: {failed[step]}"
                failed = {int(idx[k]): f"{failed[int(idx[k])]}; {retry.value}: {msg}" for k, msg in still.items()}
            for step, reason in failed.items():
                errors[chunk_start - start + step] = reason
                converged[chunk_start - start + step] = False
            u = out["node"]["u_pu"]
            if not symmetric:
                u = u.reshape(u.shape[0], -1)
            energized = out["node"]["energized"].astype(bool)
            if not symmetric:
                energized = np.repeat(energized, 3, axis=1)
            masked = np.where(energized, u, np.nan)
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                u_min[rows] = np.nanmin(masked, axis=1)
                u_max[rows] = np.nanmax(masked, axis=1)
                v_viol[rows] = np.sum((masked < limits.u_min_pu) | (masked > limits.u_max_pu), axis=1)
                if loading_components:
                    loads = np.concatenate([out[c]["loading"] for c in loading_components], axis=1)
                    max_loading[rows] = np.nanmax(loads, axis=1)
                    overloads[rows] = np.sum(loads > limits.loading_max, axis=1)
            bad = ~converged[rows]
            for arr in (u_min, u_max, max_loading):
                arr[rows][bad] = np.nan
            if writer is not None:
                writer.write(chunk_start, profiles.time[chunk_start:chunk_stop], out)
            done += chunk_stop - chunk_start
            if progress is not None:
                progress(done, n)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.commit()
    return TimeSeriesResult(
        grid_name=grid.name,
        time=profiles.time[start:stop],
        converged=converged,
        fallback=fallback,
        u_min_pu=u_min,
        u_max_pu=u_max,
        max_loading=max_loading,
        voltage_violations=v_viol,
        overloads=overloads,
        errors=errors,
        limits=limits,
    )


def _calculate(
    model: PowerGridModel,
    update: dict[str, dict[str, np.ndarray]],
    method: PowerFlowMethod,
    symmetric: bool,
    threading: int,
    error_tolerance: float,
    max_iterations: int,
    wanted: dict[str, Any],
) -> tuple[dict[str, Any], dict[int, str]]:
    """One batch call; return the columnar output and the failed scenarios with their reasons."""
    try:
        out = model.calculate_power_flow(
            symmetric=symmetric,
            calculation_method=CalculationMethod[method.value],
            update_data=update,
            threading=threading,
            error_tolerance=error_tolerance,
            max_iterations=max_iterations,
            output_component_types=cast(Any, wanted),
            continue_on_batch_error=True,
        )
    except PowerGridBatchError as exc:  # pragma: no cover - continue_on_batch_error keeps this from happening
        raise CalculationError(str(exc)) from exc
    except PowerGridError as exc:
        raise CalculationError(f"{type(exc).__name__}: {exc}") from exc
    failed: dict[int, str] = {}
    batch_error = model.batch_error
    if batch_error is not None:
        for k, message in zip(batch_error.failed_scenarios, batch_error.error_messages, strict=True):
            failed[int(k)] = str(message).strip().splitlines()[0] if str(message).strip() else "did not converge"
    return cast(dict[str, Any], out), failed

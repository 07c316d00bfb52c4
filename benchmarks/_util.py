"""Shared helpers of the benchmarks: timing with medians, peak memory, child processes, tables.

Every benchmark script runs its measurements in child processes (one per side and case), so
the peak resident memory each child reports (``ru_maxrss`` of ``RUSAGE_SELF``) belongs to
that side alone. A child prints one JSON object on its last stdout line; the parent collects it
with :func:`run_child`.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent

#: Marker in front of the JSON line a child prints last.
RESULT_MARK = "@@BENCH-RESULT@@ "


@dataclass
class Timing:
    """Wall-clock seconds of repeated runs: the median, and every run."""

    median: float
    runs: list[float]

    @property
    def spread(self) -> float:
        """(max - min) / median: a rough noise figure."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median > 0 else math.nan


def time_it(fn: Callable[[], Any], *, repeats: int, warmup: int = 0) -> tuple[Timing, Any]:
    """Return the timing of ``repeats`` calls of ``fn`` (after ``warmup`` untimed calls) and the last result."""
    result: Any = None
    for _ in range(warmup):
        result = fn()
    runs: list[float] = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return Timing(statistics.median(runs), runs), result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def quiet_warnings() -> None:
    """Silence the deprecation and future warnings the libraries print on import and use."""
    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def emit(result: dict[str, Any]) -> None:
    """Print a child's result as the marked JSON line its parent reads (peak memory added)."""
    result = dict(result)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Timing):
        return asdict(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class ChildResult:
    """What a child process reported, or why it reported nothing."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    timed_out: bool = False


def run_child(script: str, args: Sequence[str], *, timeout: float | None = None, echo: bool = True) -> ChildResult:
    """Run ``benchmarks/<script> args`` in a fresh interpreter and return its reported result.

    The child's other output is echoed (indented) so long runs show progress. A child that
    exceeds ``timeout`` seconds is killed and reported as timed out.
    """
    cmd = [sys.executable, str(BENCH_DIR / script), *args]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return ChildResult(
            False, error=f"timed out after {timeout:.0f} s", seconds=time.perf_counter() - t0, timed_out=True
        )
    seconds = time.perf_counter() - t0
    data: dict[str, Any] | None = None
    for line in out.splitlines():
        if line.startswith(RESULT_MARK):
            data = json.loads(line[len(RESULT_MARK) :])
        else:
            lines.append(line)
    if echo:
        for line in lines:
            if line.strip():
                print(f"    | {line}", flush=True)
    if proc.returncode != 0 or data is None:
        tail = "\n".join(lines[-15:])
        return ChildResult(False, error=f"exit status {proc.returncode}:\n{tail}", seconds=seconds)
    return ChildResult(True, data=data, seconds=seconds)


def timing_of(data: dict[str, Any], key: str) -> Timing:
    """Rebuild a :class:`Timing` a child reported under ``key``."""
    raw = data[key]
    return Timing(float(raw["median"]), [float(x) for x in raw["runs"]])


# -- printing ---------------------------------------------------------------------------------


def fmt_s(seconds: float | None) -> str:
    """Seconds with a unit that keeps three significant digits."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 100:
        return f"{seconds:.2f} s"
    return f"{seconds:.0f} s"


def fmt_ratio(value: float | None) -> str:
    """A ratio as ``12.3x``."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x" if value >= 100 else f"{value:.1f}x"


def fmt_mb(value: float | None) -> str:
    """Megabytes."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.0f} MB"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain-text table (first column left-aligned, the rest right-aligned)."""
    text = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print()
    print(title)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print(line(row))
    print(flush=True)


@dataclass
class Target:
    """One target of the issue: the measured value, the limit and whether it is met."""

    name: str
    measured: float | None
    limit: float
    kind: str  # "max" (measured <= limit) or "min" (measured >= limit)
    unit: str  # "x" for ratios, "s" for seconds, "count" for a number of cases, "<what>/s" for rates
    note: str = ""

    @property
    def passed(self) -> bool | None:
        """True/False, or None when the value could not be measured."""
        if self.measured is None or not math.isfinite(self.measured):
            return None
        return self.measured <= self.limit if self.kind == "max" else self.measured >= self.limit

    def cells(self) -> list[str]:
        """Table cells: name, measured, target, verdict, note."""
        show: Callable[[float | None], str]
        if self.unit == "count":

            def show(v: float | None) -> str:
                return "-" if v is None else f"{v:g}"
        elif self.unit.endswith("/s"):

            def show(v: float | None) -> str:
                return "-" if v is None else f"{v:,.0f} {self.unit}"
        else:
            show = fmt_ratio if self.unit == "x" else fmt_s
        op = "<=" if self.kind == "max" else ">="
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]
        return [self.name, show(self.measured), f"{op} {show(self.limit)}", verdict, self.note]


def write_report(path: str | None, name: str, targets: Sequence[Target], info: Sequence[Sequence[str]]) -> None:
    """Write a benchmark's targets and informational ratios as JSON for ``run_all.py``."""
    if not path:
        return
    payload = {
        "benchmark": name,
        "targets": [asdict(t) for t in targets],
        "info": [list(r) for r in info],
        "peak_rss_mb": peak_rss_mb(),
    }
    Path(path).write_text(json.dumps(payload, indent=1, default=_jsonable))

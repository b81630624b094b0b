"""The benchmark harness: task suites, one interleaved runner over many methods, signal quality
(AUROC), reports, and threshold calibration. `specguard bench` and `specguard calibrate` are its
command-line faces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy

if TYPE_CHECKING:
    from .calibrate import CalibrationResult, calibrate
    from .runner import BenchResult, MethodSummary, run_bench
    from .suites import load_suite

__all__ = [
    "BenchResult",
    "CalibrationResult",
    "MethodSummary",
    "calibrate",
    "load_suite",
    "run_bench",
]

_LAZY = {
    "BenchResult": ".runner",
    "MethodSummary": ".runner",
    "run_bench": ".runner",
    "CalibrationResult": ".calibrate",
    "calibrate": ".calibrate",
    "load_suite": ".suites",
}

__getattr__ = lazy(__name__, _LAZY)

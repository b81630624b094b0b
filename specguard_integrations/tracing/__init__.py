"""Step-score traces: one run type built from the engine's `StepRecord`s, JSONL files, handlers.

A trace file holds one JSON line per decided step (``{"type": "step", ...}``) and one per
finished run (``{"type": "run", ...}``). Lines are appended with a single ``write`` under an
exclusive file lock, so runs that finish at the same time in threads or processes never
interleave. `read_trace` groups the lines back into `TraceRun`s.
"""

from __future__ import annotations

from .records import TraceRun, TraceWriter, read_trace

__all__ = ["TraceRun", "TraceWriter", "read_trace"]

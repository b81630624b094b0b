"""The trace run type, and appending / reading JSONL trace files."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from ..types import StepRecord

try:  # POSIX advisory locks; elsewhere the in-process lock alone applies
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class TraceRun(BaseModel):
    """One generation: where it ran, with which models and settings, and its step records."""

    run_id: str
    parent_run_id: str | None = None
    source: str = Field(description="Who produced the run: engine, langchain or llama_index.")
    model_name: str | None = None
    config: dict[str, Any] | None = None
    started_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)

    def step_line(self, record: StepRecord) -> dict[str, Any]:
        return {
            "type": "step",
            "run_id": self.run_id,
            "parent_run_id": self.parent_run_id,
            "record": record.model_dump(mode="json"),
        }

    def run_line(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"steps"})
        return {"type": "run", **data, "num_steps": len(self.steps)}


class TraceWriter:
    """Appends trace lines to a JSONL file; safe across threads and processes."""

    _locks: ClassVar[dict[str, threading.Lock]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard:
            self._lock = self._locks.setdefault(str(self.path.resolve()), threading.Lock())

    def write_lines(self, lines: list[dict[str, Any]]) -> None:
        """Append lines as one write (a run's steps and summary stay together)."""
        payload = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        data = payload.encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
            finally:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def write_run(self, run: TraceRun) -> None:
        self.write_lines([run.step_line(s) for s in run.steps] + [run.run_line()])


def read_trace(path: str | os.PathLike[str]) -> list[TraceRun]:
    """Load a trace file back into runs, in the order their summaries were written.

    Steps of a run whose summary line is missing (a process killed mid-run) come back as a run
    with ``ended_at=None``.
    """
    steps: dict[str, list[StepRecord]] = {}
    runs: dict[str, TraceRun] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON line: {err}") from err
            kind = obj.get("type")
            if kind == "step":
                steps.setdefault(obj["run_id"], []).append(StepRecord(**obj["record"]))
            elif kind == "run":
                obj.pop("type")
                obj.pop("num_steps", None)
                runs[obj["run_id"]] = TraceRun(**obj)
            else:
                raise ValueError(f"{path}:{n}: unknown line type {kind!r}")
    for run_id, records in steps.items():
        run = runs.setdefault(run_id, TraceRun(run_id=run_id, source="unknown", ended_at=None))
        run.steps = records
    return list(runs.values())

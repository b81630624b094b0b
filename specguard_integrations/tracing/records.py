"""The trace run type, and appending / reading JSONL trace files."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError

from ..errors import InvalidInputError
from ..types import StepRecord

log = logging.getLogger(__name__)

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
    error: str | None = Field(
        None, description="Why the call failed (``Type: message``); None for a finished run."
    )

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


def error_text(err: BaseException) -> str:
    """How a run's `TraceRun.error` names a failure: ``RuntimeError: target went away``."""
    message = str(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


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
    with ``ended_at=None``; a truncated last line (what a killed writer leaves) is skipped with
    a warning. Anything else that is not a trace line is a `ValueError` naming ``FILE:LINE``.
    A failed call's run has `TraceRun.error` (older files kept it as ``summary["error"]``).
    """
    src = Path(path)
    if src.is_dir():
        raise InvalidInputError(f"{src}: is a directory, not a trace file")
    if not src.is_file():
        raise InvalidInputError(f"{src}: no such trace file")
    raw = src.read_bytes()
    if not raw.strip():
        raise InvalidInputError(f"{src}: empty trace file (no runs)")
    steps: dict[str, list[StepRecord]] = {}
    runs: dict[str, TraceRun] = {}
    lines = raw.split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        truncated = n == len(lines) and not raw.endswith(b"\n")
        obj = _parse_line(src, n, line, truncated)
        if obj is not None:
            _add_line(src, n, obj, steps, runs)
    for run_id, records in steps.items():
        run = runs.setdefault(run_id, TraceRun(run_id=run_id, source="unknown", ended_at=None))
        run.steps = records
    return list(runs.values())


def _parse_line(src: Path, n: int, line: bytes, truncated: bool) -> dict[str, Any] | None:
    """One line as a JSON object; None for a truncated last line (skipped with a warning)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInputError(
            f"{src}:{n}: not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        if truncated:
            log.warning("%s:%d: skipped a truncated last line (%s)", src, n, err)
            return None
        raise InvalidInputError(f"{src}:{n}: not a JSON line: {err}") from None
    if not isinstance(obj, dict):
        raise InvalidInputError(
            f"{src}:{n}: a trace line is a JSON object, got {type(obj).__name__}"
        )
    return obj


def _add_line(
    src: Path,
    n: int,
    obj: dict[str, Any],
    steps: dict[str, list[StepRecord]],
    runs: dict[str, TraceRun],
) -> None:
    kind = obj.get("type")
    try:
        if kind == "step":
            if not isinstance(obj.get("run_id"), str) or not isinstance(obj.get("record"), dict):
                raise InvalidInputError("a step line needs a run_id string and a record object")
            steps.setdefault(obj["run_id"], []).append(StepRecord(**obj["record"]))
        elif kind == "run":
            fields = {k: v for k, v in obj.items() if k not in ("type", "num_steps")}
            run = TraceRun(**_lift_summary_error(fields))
            runs[run.run_id] = run
        else:
            raise InvalidInputError(f"unknown line type {kind!r} (step or run)")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InvalidInputError(
            f"{src}:{n}: invalid {kind} line: {where}: {first['msg']}"
        ) from None
    except (ValueError, TypeError) as err:
        raise InvalidInputError(f"{src}:{n}: {err}") from None


def _lift_summary_error(fields: dict[str, Any]) -> dict[str, Any]:
    """Run lines written before `TraceRun.error` existed kept a LangChain error in the summary."""
    summary = fields.get("summary")
    if fields.get("error") is None and isinstance(summary, dict) and summary.get("error"):
        rest = {k: v for k, v in summary.items() if k != "error"}
        return {**fields, "summary": rest, "error": str(summary["error"])}
    return fields

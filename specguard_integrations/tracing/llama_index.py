"""A LlamaIndex event handler that collects SpecGuard step events into trace runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMCompletionEndEvent,
)
from pydantic import PrivateAttr

from ..llama_index.llms import SpecGuardStepEvent
from ..types import StepRecord
from .records import TraceRun, TraceWriter


class SpecGuardTraceEventHandler(BaseEventHandler):
    """Groups `SpecGuardStepEvent`s by the span of the LLM call; a run ends with that call's
    end event. With ``path`` every finished run is appended to a JSONL trace file."""

    path: str | None = None
    on_run: Callable[[TraceRun], None] | None = None  # e.g. tracing.otel.record_run
    _runs: list[TraceRun] = PrivateAttr(default_factory=list)
    _open: dict[str, TraceRun] = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "SpecGuardTraceEventHandler"

    @property
    def runs(self) -> list[TraceRun]:
        return self._runs

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        span = event.span_id or "no-span"
        if isinstance(event, SpecGuardStepEvent):
            with self._lock:
                run = self._open.get(span)
                if run is None:
                    run = TraceRun(run_id=span, source="llama_index", model_name=event.model_name)
                    self._open[span] = run
                run.steps.append(StepRecord(**event.record))
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            with self._lock:
                run = self._open.pop(span, None)
            if run is None:
                return
            response = event.response
            extra = getattr(response, "additional_kwargs", None) or {}
            run.summary = dict(extra.get("specguard") or {})
            run.ended_at = time.time()
            self._runs.append(run)
            if self.path:
                TraceWriter(self.path).write_run(run)
            if self.on_run is not None:
                self.on_run(run)

"""A LlamaIndex event handler that collects SpecGuard step events into trace runs."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMCompletionEndEvent,
)
from llama_index.core.instrumentation.events.span import SpanDropEvent
from pydantic import PrivateAttr

from ..llama_index.llms import SpecGuardStepEvent
from ..types import StepRecord
from .records import TraceRun, TraceWriter, error_text


def _drop_error(event: SpanDropEvent) -> str:
    """The failure a `SpanDropEvent` reports. The event carries only ``str(err)``; the dispatcher
    sends it from inside its ``except`` block, so the exception in flight names the type."""
    err = sys.exc_info()[1]
    if err is not None and str(err) == event.err_str:
        return error_text(err)
    return event.err_str


class SpecGuardTraceEventHandler(BaseEventHandler):
    """Groups `SpecGuardStepEvent`s by the span of the LLM call; a run ends with that call's
    end event, or with the failure that ended the call (`TraceRun.error`): a `SpanDropEvent`
    when the call raised, an `ExceptionEvent` when its stream did. With ``path`` every ended run
    is appended to a JSONL trace file."""

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
            self._step(span, event)
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            extra = getattr(event.response, "additional_kwargs", None) or {}
            self._close(span, dict(extra.get("specguard") or {}), None)
        elif isinstance(event, SpanDropEvent):
            self._close(span, {}, _drop_error(event))
        elif isinstance(event, ExceptionEvent):
            self._close(span, {}, error_text(event.exception))

    def _step(self, span: str, event: SpecGuardStepEvent) -> None:
        with self._lock:
            run = self._open.get(span)
            if run is None:
                run = TraceRun(run_id=span, source="llama_index", model_name=event.model_name)
                self._open[span] = run
            run.steps.append(StepRecord(**event.record))

    def _close(self, span: str, summary: dict[str, Any], error: str | None) -> None:
        """End the span's run (if it produced steps): keep it, write it, hand it on."""
        with self._lock:
            run = self._open.pop(span, None)
        if run is None:
            return
        run.summary, run.error, run.ended_at = summary, error, time.time()
        self._runs.append(run)
        if self.path:
            TraceWriter(self.path).write_run(run)
        if self.on_run is not None:
            self.on_run(run)

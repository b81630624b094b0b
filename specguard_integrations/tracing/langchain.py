"""A LangChain callback handler that collects SpecGuard step records into trace runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from ..types import StepRecord
from .records import TraceRun, TraceWriter, error_text

STEP_EVENT = "specguard_step"


class SpecGuardTraceHandler(BaseCallbackHandler):
    """Collects one `TraceRun` per chat/LLM call or reasoning chain that produced steps.

    Pass ``path`` to append every finished run to a JSONL trace file. Finished runs are also
    kept in `runs`; a call or chain that raised ends its run with `TraceRun.error` set.
    """

    def __init__(
        self, path: str | None = None, on_run: Callable[[TraceRun], None] | None = None
    ) -> None:
        self.on_run = on_run  # e.g. tracing.otel.record_run
        self.runs: list[TraceRun] = []
        self._open: dict[UUID, TraceRun] = {}
        self._meta: dict[UUID, tuple[UUID | None, str | None, dict[str, Any] | None]] = {}
        self._started: dict[UUID, float] = {}
        self._writer = TraceWriter(path) if path else None
        self._lock = threading.Lock()

    # runs start: remember parents and model names; a run becomes a trace on its first step
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = (metadata or {}).get("ls_model_name")
        config = (invocation_params or {}).get("config")
        self._meta[run_id] = (parent_run_id, name, config if isinstance(config, dict) else None)
        self._started[run_id] = time.time()

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.on_chat_model_start(
            serialized, prompts, run_id=run_id, parent_run_id=parent_run_id, **kwargs
        )

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._meta.setdefault(run_id, (parent_run_id, None, None))
        self._started.setdefault(run_id, time.time())

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name != STEP_EVENT:
            return
        with self._lock:
            run = self._open.get(run_id)
            if run is None:
                parent, model, config = self._meta.get(run_id, (None, None, None))
                run = TraceRun(
                    run_id=str(run_id),
                    parent_run_id=str(parent) if parent else None,
                    source="langchain",
                    model_name=model,
                    config=config,
                    started_at=self._started.get(run_id, time.time()),
                )
                self._open[run_id] = run
            run.steps.append(StepRecord(**data))

    # runs end
    def _finish(
        self, run_id: UUID, summary: dict[str, Any] | None, error: str | None = None
    ) -> None:
        with self._lock:
            run = self._open.pop(run_id, None)
            self._meta.pop(run_id, None)
            self._started.pop(run_id, None)
        if run is None:
            return
        run.ended_at = time.time()
        run.summary = dict(summary or {})
        run.error = error
        self.runs.append(run)
        if self._writer is not None:
            self._writer.write_run(run)
        if self.on_run is not None:
            self.on_run(run)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        summary = None
        for gens in getattr(response, "generations", []) or []:
            for g in gens:
                msg = getattr(g, "message", None)
                meta = getattr(msg, "response_metadata", None) or g.generation_info or {}
                summary = summary or meta.get("specguard")
        self._finish(run_id, summary)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        summary = outputs.get("summary") if isinstance(outputs, dict) else None
        self._finish(run_id, summary)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._finish(run_id, None, error=error_text(error))

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._finish(run_id, None, error=error_text(error))

"""OpenTelemetry export of trace runs (the `otel` extra): a span per generation, a child span
per step, scores and decision as attributes.

Attribute names follow the GenAI semantic conventions where they apply (``gen_ai.*``); the
SpecGuard-specific ones live under ``specguard.*``. Span times are reconstructed from the run's
start time and each step's measured phase times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from .records import TraceRun

_NS = 1_000_000_000


def _tracer(tracer: Tracer | None) -> Tracer:
    if tracer is not None:
        return tracer
    try:
        from opentelemetry import trace
    except ImportError as err:
        raise MissingDependencyError(
            "OpenTelemetry export needs: pip install 'specguard-integrations[otel]'"
        ) from err
    return trace.get_tracer("specguard_integrations")


def record_run(run: TraceRun, tracer: Tracer | None = None) -> None:
    """Emit one ended run as spans: ``specguard.generate`` with ``specguard.step`` children; a
    failed run's span has status ERROR and ``error.type``."""
    tr = _tracer(tracer)
    total = sum(s.times.total for s in run.steps)
    ended = run.ended_at or run.started_at + total
    # steps are laid end to end before the run's end; never start before the run started
    start = int(min(run.started_at, ended - total) * _NS)
    end = int(ended * _NS)
    draft_tokens = sum(s.num_tokens for s in run.steps if s.source == "draft")
    target_tokens = sum(s.num_tokens for s in run.steps if s.source == "target")
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "specguard",
        "gen_ai.provider.name": "specguard",
        "gen_ai.request.model": run.model_name or "",
        "gen_ai.response.model": run.model_name or "",
        "gen_ai.usage.output_tokens": draft_tokens + target_tokens,
        "specguard.run_id": run.run_id,
        "specguard.source": run.source,
        "specguard.steps": len(run.steps),
        "specguard.draft_tokens": draft_tokens,
        "specguard.target_tokens": target_tokens,
        "specguard.target_call_rate": (
            sum(s.source == "target" for s in run.steps) / len(run.steps) if run.steps else 0.0
        ),
    }
    if "prompt_tokens" in run.summary:
        attrs["gen_ai.usage.input_tokens"] = int(run.summary["prompt_tokens"])
    if "finish_reason" in run.summary:
        attrs["gen_ai.response.finish_reasons"] = [str(run.summary["finish_reason"])]
    if run.parent_run_id:
        attrs["specguard.parent_run_id"] = run.parent_run_id
    if run.error is not None:
        attrs["error.type"] = run.error.partition(":")[0]
    parent = tr.start_span(f"specguard.generate {run.model_name or ''}".strip(), start_time=start)
    parent.set_attributes(attrs)
    from opentelemetry import trace

    if run.error is not None:  # a failed call: the span's status says so, with the message
        parent.set_status(trace.Status(trace.StatusCode.ERROR, run.error))

    ctx = trace.set_span_in_context(parent)
    t = start
    for s in run.steps:
        dur = int(s.times.total * _NS)
        span = tr.start_span("specguard.step", context=ctx, start_time=t)
        step_attrs: dict[str, Any] = {
            "specguard.step.index": s.step_index,
            "specguard.step.source": s.source,
            "specguard.step.decision": s.decision,
            "specguard.step.signals": s.signals,
            "specguard.step.confidence": s.confidence,
            "specguard.step.confidence_norm": s.confidence_norm,
            "specguard.step.fused": s.fused,
            "specguard.step.threshold": s.threshold,
            "specguard.step.tokens": s.num_tokens,
            "specguard.step.candidates": s.num_candidates,
            "specguard.step.finish": s.finish,
        }
        if s.grounding is not None and s.grounding_norm is not None:
            step_attrs["specguard.step.grounding"] = s.grounding
            step_attrs["specguard.step.grounding_norm"] = s.grounding_norm
        if s.target_score is not None and s.target_norm is not None:
            step_attrs["specguard.step.target_score"] = s.target_score
            step_attrs["specguard.step.target_norm"] = s.target_norm
        span.set_attributes(step_attrs)
        t += dur
        span.end(end_time=t)
    parent.end(end_time=max(end, t))

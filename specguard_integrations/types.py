"""Records the step loop produces, shared by every consumer.

`StepRecord` is the one type for a decided step: LangChain metadata and events, LlamaIndex events,
trace files and benchmarks all read it. `GenerationResult` adds the totals, whose formulas are
defined here once.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StepSource = Literal["draft", "target"]
Decision = Literal["accept", "reject"]
SignalMode = Literal[
    "grounding+confidence", "confidence_only", "reward_model", "target_verified", "draft_band"
]
StepFinish = Literal[
    "boundary",  # the segmenter found a step boundary
    "final_answer",  # the step holds a final-answer marker line: generation ends
    "tool_call",  # the step is a tool call: generation ends, the caller runs the tool
    "eos",  # the model emitted end-of-sequence: generation ends
    "stop",  # a caller stop sequence appeared: generation ends, text cut before it
    "max_step_tokens",  # cut at max_step_tokens without a boundary; generation goes on
    "max_new_tokens",  # the token budget ran out: generation ends
    "context_window",  # the model's context is full (a server said so): generation ends
    "content_filter",  # a server's content filter cut the step: generation ends
]
FinishReason = Literal[
    "final_answer",
    "tool_call",
    "eos",
    "stop",
    "max_steps",
    "max_new_tokens",
    "context_window",
    "content_filter",
]
# the step finishes that end a generation, as the generation's finish reason
ENDS_GENERATION: dict[StepFinish, FinishReason] = {
    "eos": "eos",
    "final_answer": "final_answer",
    "tool_call": "tool_call",
    "stop": "stop",
    "context_window": "context_window",
    "content_filter": "content_filter",
}
Phase = Literal["propose", "select", "score", "decide", "target", "commit"]

# the OpenAI API's finish_reason for each of ours (LangChain, LlamaIndex and the server say it so)
OPENAI_FINISH: dict[FinishReason, str] = {
    "eos": "stop",
    "final_answer": "stop",
    "stop": "stop",
    "tool_call": "tool_calls",
    "max_steps": "length",
    "max_new_tokens": "length",
    "context_window": "length",
    "content_filter": "content_filter",  # as OpenAI says it: the text was cut by a filter
}


class PhaseTimes(BaseModel):
    """Wall time in seconds of each phase of one step."""

    model_config = ConfigDict(extra="forbid")

    propose: float = 0.0
    select: float = 0.0
    score: float = 0.0
    decide: float = 0.0
    target: float = 0.0  # target catch-up prefill plus the fallback step
    commit: float = 0.0

    @property
    def total(self) -> float:
        return self.propose + self.select + self.score + self.decide + self.target + self.commit

    @contextlib.contextmanager
    def timed(self, phase: Phase) -> Iterator[None]:
        """Add the wall time of the block to `phase`. On CUDA the clock is read after the
        devices finish the work queued so far (asynchronous kernels are billed to the phase
        that queued them, not the next one that waits)."""
        synchronize()
        t = time.perf_counter()
        try:
            yield
        finally:
            synchronize()
            setattr(self, phase, getattr(self, phase) + time.perf_counter() - t)


def synchronize() -> None:
    """Wait for every CUDA device to finish its queued work, where torch is loaded and CUDA is
    in use (a no-op otherwise; torch is never imported for it)."""
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    for device in range(torch.cuda.device_count()):
        torch.cuda.synchronize(device)


class StepRecord(BaseModel):
    """One decided reasoning step and why it was kept or rewritten.

    ``step_index`` is named so (not ``index``) because LangChain merges chunk list items that
    carry an ``index`` key.
    """

    model_config = ConfigDict(extra="forbid")

    step_index: int = Field(description="0-based position of the step in the generation.")
    text: str = Field(description="The committed text of the step.")
    source: StepSource = Field(description="Which model wrote the committed text.")
    num_tokens: int = Field(description="Tokens of the committed text, in its writer's tokenizer.")
    decision: Decision = Field(
        description="Verdict on the draft step: accept, or reject (fallback)."
    )
    signals: SignalMode = Field(
        description="What the verdict read: the draft signals available, a reward model, the"
        " target's log-probabilities (target_verified), or the draft's score outside the"
        " target-verified judge's band (draft_band: kept above it, rejected below it, whatever"
        " the threshold)."
    )
    grounding: float | None = Field(description="g = min_t G(t), attention-rollout grounding.")
    confidence: float = Field(description="l = min_t log p_draft(s_t | ctx, s_<t).")
    grounding_norm: float | None = Field(description="g~ = clip((g - g_lo) / (g_hi - g_lo)).")
    confidence_norm: float = Field(description="l~ = clip((l - l_lo) / (l_hi - l_lo)).")
    target_score: float | None = Field(
        None,
        description="t = agg_t log p_target(s_t | ctx, s_<t) of the draft step (the"
        " target-verified judge; None for the other judges).",
    )
    target_norm: float | None = Field(None, description="t~ = clip((t - t_lo) / (t_hi - t_lo)).")
    fused: float = Field(
        description="r = beta * l~ + (1 - beta) * g~ (the reward when signals is reward_model;"
        " gamma * t~ + (1 - gamma) * r_draft when target_verified)."
    )
    threshold: float = Field(description="tau; the draft step is accepted when r >= tau.")
    beta: float = Field(description="Weight of confidence in r.")
    draft_text: str = Field(description="The selected draft candidate (equal to text if accepted).")
    draft_tokens: int = Field(description="Tokens of the selected draft candidate.")
    num_candidates: int = Field(description="Draft candidates sampled (k).")
    selected_candidate: int = Field(description="Index j* of the selected candidate.")
    finish: StepFinish = Field(description="Why the committed step ended.")
    times: PhaseTimes = Field(default_factory=PhaseTimes, description="Seconds per phase.")

    @property
    def accepted(self) -> bool:
        return self.decision == "accept"


class GenerationResult(BaseModel):
    """The text SpecGuard generated, one record per step, and the totals."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    text: str
    steps: list[StepRecord]
    finish_reason: FinishReason
    prompt_tokens: int = Field(
        description="Prompt tokens in the target's tokenizer (the draft's when a remote target"
        " was never called)."
    )
    draft_prompt_tokens: int = Field(description="Prompt tokens in the draft's tokenizer.")
    cached_tokens: int = Field(
        0,
        description="Of prompt_tokens, those read from a prefix cache (a local model's, or the"
        " remote engine's own count) rather than computed again.",
    )
    draft_cached_tokens: int = Field(
        0, description="Of draft_prompt_tokens, those read from the draft's prefix cache."
    )
    wall_time: float = Field(description="Seconds from the call to the last step.")

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def step_texts(self) -> list[str]:
        return [s.text for s in self.steps]

    @property
    def draft_steps(self) -> int:
        """Steps whose committed text the draft wrote."""
        return sum(1 for s in self.steps if s.source == "draft")

    @property
    def target_steps(self) -> int:
        """Steps the target regenerated (each is one target call)."""
        return sum(1 for s in self.steps if s.source == "target")

    @property
    def acceptance_rate(self) -> float:
        """draft_steps / num_steps (0 when nothing was generated)."""
        return self.draft_steps / self.num_steps if self.steps else 0.0

    @property
    def target_call_rate(self) -> float:
        """target_steps / num_steps = 1 - acceptance_rate."""
        return self.target_steps / self.num_steps if self.steps else 0.0

    @property
    def draft_tokens(self) -> int:
        """Committed tokens the draft wrote."""
        return sum(s.num_tokens for s in self.steps if s.source == "draft")

    @property
    def target_tokens(self) -> int:
        """Committed tokens the target wrote."""
        return sum(s.num_tokens for s in self.steps if s.source == "target")

    @property
    def output_tokens(self) -> int:
        return self.draft_tokens + self.target_tokens

    @property
    def draft_token_share(self) -> float:
        """draft_tokens / output_tokens."""
        return self.draft_tokens / self.output_tokens if self.output_tokens else 0.0

    def phase_times(self) -> PhaseTimes:
        """Per-phase seconds summed over all steps."""
        fields = PhaseTimes.model_fields
        return PhaseTimes(**{f: sum(getattr(s.times, f) for s in self.steps) for f in fields})

    @property
    def budget_cut(self) -> int | None:
        """The token budget the reply ran out of (its output tokens), or None when it ended
        otherwise."""
        return self.output_tokens if self.finish_reason == "max_new_tokens" else None

    def openai_finish_reason(self, has_tool_calls: bool = False) -> str:
        """The OpenAI API's ``finish_reason``: tool_calls, stop, length or content_filter. A
        reply with calls that the budget cut (its last call may be cut short) is ``length``."""
        reason = OPENAI_FINISH[self.finish_reason]
        return "tool_calls" if has_tool_calls and reason in ("stop", "tool_calls") else reason

    def usage(self) -> dict[str, Any]:
        """Token usage: prompt (target tokenizer), output split into draft and target tokens."""
        return {
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.prompt_tokens + self.output_tokens,
            "output_token_details": {"draft": self.draft_tokens, "target": self.target_tokens},
            "input_token_details": {"cache_read": self.cached_tokens},
        }

    def steps_json(self) -> list[dict[str, Any]]:
        """The step records as plain JSON data (metadata, events, traces, HTTP bodies)."""
        return [s.model_dump(mode="json") for s in self.steps]

    def summary(self) -> dict[str, float | int | str]:
        """Totals as plain data, for metadata, traces and reports."""
        return {
            "num_steps": self.num_steps,
            "draft_steps": self.draft_steps,
            "target_steps": self.target_steps,
            "acceptance_rate": self.acceptance_rate,
            "target_call_rate": self.target_call_rate,
            "draft_tokens": self.draft_tokens,
            "target_tokens": self.target_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "draft_cached_tokens": self.draft_cached_tokens,
            "finish_reason": self.finish_reason,
            "wall_time": self.wall_time,
        }

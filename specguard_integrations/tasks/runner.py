"""Solve task items with SpecGuard or with one model alone, running real tools when asked.

Both solvers return a `Solved` record, so the demo, the pair evaluation and the benchmark
compare methods on equal terms: the same prompts, the same tool loop, the same answer check.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..segmentation import make_segmenter
from .base import Item, StepVerdict, calculator

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..backends.local.model import LocalCausalLM
    from ..config import SpecGuardConfig
    from ..engine.loop import SpecGuardEngine
    from ..types import StepRecord

MAX_TOOL_ROUNDS = 4


@dataclass
class Solved:
    item: Item
    completion: str  # everything after the prompt, tool observations included
    seconds: float
    output_tokens: int
    records: list[StepRecord] = field(default_factory=list)  # SpecGuard only
    steps: list[str] = field(default_factory=list)  # reasoning steps (no observations)
    verdicts: list[StepVerdict] = field(default_factory=list)
    fallbacks: int = 0  # assisted generations that failed and ran without the assistant

    @property
    def correct(self) -> bool:
        return self.item.correct(self.completion)


def run_tool(step_text: str) -> str:
    """The observation the real calculator gives for a ReAct step's `Action Input:`."""
    m = re.search(r"Action Input:\s*([^\n]*)", step_text)
    if not m:
        return "Observation: error: no Action Input\n"
    try:
        return f"Observation: {calculator(m.group(1))}\n"
    except ValueError as err:
        return f"Observation: error: {err}\n"


def split_steps(text: str, segmenter: str, markers: tuple[str, ...]) -> list[str]:
    """A completion cut into reasoning steps with a segmenter (observations out)."""
    seg = make_segmenter(segmenter, markers)
    text = re.sub(r"Observation:[^\n]*\n", "", text)
    steps = []
    while text.strip():
        b = seg.find(text)
        if b is None:
            steps.append(text)
            break
        steps.append(text[: b.end])
        text = text[b.end :]
    return steps


def solve_specguard(engine: SpecGuardEngine, item: Item, config: SpecGuardConfig) -> Solved:
    """SpecGuard on one item; on a tool call the real tool runs and generation resumes."""
    cfg = config.merged(segmenter=item.segmenter)
    prompt, completion = item.prompt, ""
    records: list[StepRecord] = []
    steps: list[str] = []
    t0 = time.perf_counter()
    tokens = 0
    for _ in range(MAX_TOOL_ROUNDS):
        result = engine.generate(prompt + completion, config=cfg)
        records.extend(result.steps)
        steps.extend(s.text for s in result.steps)
        tokens += result.output_tokens
        completion += result.text
        if result.finish_reason != "tool_call":
            break
        completion += run_tool(result.steps[-1].text)
    solved = Solved(item, completion, time.perf_counter() - t0, tokens, records, steps)
    if item.has_step_labels:
        solved.verdicts = [item.check_step(i, s) for i, s in enumerate(steps)]
    return solved


def solve_plain(
    lm: LocalCausalLM,
    item: Item,
    *,
    max_new_tokens: int = 160,
    markers: tuple[str, ...] = (),
    assistant: LocalCausalLM | None = None,
) -> Solved:
    """One model alone, greedy `generate`; the tools family stops at `Observation:`, the others
    once a final-answer line is complete (as SpecGuard's steps do), so neither pays for text
    past the answer.

    With `assistant`, transformers' assisted generation (token-level speculative decoding) runs
    with that model as the draft: the output equals the model's own greedy output. Across
    tokenizers it is universal assisted decoding (both tokenizers passed).
    """
    import torch

    tools = item.segmenter == "react"
    completion = ""
    tokens = fallbacks = 0
    t0 = time.perf_counter()
    for _ in range(MAX_TOOL_ROUNDS):
        ids = torch.tensor([lm.encode_prompt(item.prompt + completion)], device=lm.device)
        # a stopping criterion, not `stop_strings`: assisted generation hands stop strings to
        # the assistant without a tokenizer
        ends = _has_observation if tools else _answer_line(markers or FINAL_MARKERS)
        kwargs: dict[str, object] = {"stopping_criteria": _text_stop(lm, ids.shape[1], ends)}
        if assistant is not None:
            kwargs["assistant_model"] = assistant.model
            if not lm.same_vocab(assistant):
                kwargs["tokenizer"], kwargs["assistant_tokenizer"] = (
                    lm.tokenizer,
                    assistant.tokenizer,
                )
        try:
            out = _generate(lm, ids, max_new_tokens, kwargs)
        except RuntimeError as err:
            if assistant is None:
                raise
            # transformers' assisted generation across tokenizers fails on some inputs (an
            # empty assistant input); the item is generated by the model alone, the time spent
            # counted, and the fallback recorded
            log.warning("assisted generation failed (%s); generating without the assistant", err)
            fallbacks += 1
            kwargs = {k: v for k, v in kwargs.items() if k == "stopping_criteria"}
            out = _generate(lm, ids, max_new_tokens, kwargs)
        new = [t for t in out[0, ids.shape[1] :].tolist() if t not in lm.eos_ids]
        tokens += len(new)
        text = lm.decode(new)
        # an assisted step can append past the stop; the first `Observation:` is the tool's turn
        head = text.split("Observation:", 1)[0]
        if tools and head != text and "Final Answer:" not in head:
            text = head
            completion += text + run_tool(text)
            continue
        completion += text
        break
    solved = Solved(item, completion, time.perf_counter() - t0, tokens, fallbacks=fallbacks)
    solved.steps = split_steps(completion, item.segmenter, markers or FINAL_MARKERS)
    if item.has_step_labels:
        solved.verdicts = [item.check_step(i, s) for i, s in enumerate(solved.steps)]
    return solved


FINAL_MARKERS = ("Final Answer:", "Answer:")


def _generate(lm: LocalCausalLM, ids: Any, max_new_tokens: int, kwargs: dict[str, Any]) -> Any:
    import torch

    with torch.inference_mode(), lm.lock:
        return lm.model.generate(
            ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(lm.eos_ids),
            pad_token_id=lm.tokenizer.pad_token_id or 0,
            **kwargs,
        )


def _has_observation(text: str) -> bool:
    return "Observation:" in text


def _answer_line(markers: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a final-answer line is complete, by SpecGuard's own rule (a line that starts
    with a marker, through its end)."""
    from ..segmentation import FinalAnswer

    final = FinalAnswer(markers)

    def ends(text: str) -> bool:
        return final.find(text) is not None

    return ends


def _text_stop(lm: LocalCausalLM, start: int, ends: Callable[[str], bool]) -> object:
    """A transformers stopping criterion: stop once the generated text `ends`."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # type: ignore[no-untyped-def]
            import torch

            done = [ends(lm.decode(row[start:].tolist())) for row in input_ids]
            return torch.tensor(done, device=input_ids.device)

    return StoppingCriteriaList([_Stop()])

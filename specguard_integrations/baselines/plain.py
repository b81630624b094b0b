"""Plain token-by-token decoding of one local model: the target-only (or draft-only) baseline,
and what `specguard serve --mode plain` runs for a model served on its own.

Stop strings are honoured on the decoded text; text that could still become a stop string is
held back from the stream until it cannot. Every token carries its log-probability under the
raw (temperature 1) distribution, which is what an OpenAI-compatible ``logprobs`` field reports.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..backends.local.sampling import sample_next
from ..backends.local.sessions import check_prompt

if TYPE_CHECKING:
    import torch

    from ..backends.local.model import LocalCausalLM


@dataclass
class PlainResult:
    text: str
    token_ids: list[int]  # generated tokens (EOS excluded)
    logprobs: list[float]  # one per token in `token_ids`
    offsets: list[int]  # character offset of each token in `text` (clipped to len(text))
    finish_reason: Literal["stop", "length"]
    stop_reason: str | None  # the stop string that ended the text; None at EOS or length
    prompt_tokens: int
    completion_tokens: int = 0
    tokens: list[str] = field(default_factory=list)  # decoded piece per token


class GenerationCancelled(RuntimeError):
    """`cancelled` returned True: the generation stopped between tokens."""


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """Characters at the end of `text` that could begin a stop string."""
    hold = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:n]):
                hold = n
                break
    return hold


def plain_stream(
    lm: LocalCausalLM,
    prompt: str,
    *,
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: tuple[str, ...] = (),
    include_stop: bool = False,
    generator: torch.Generator | None = None,
    add_special_tokens: bool = True,
    cancelled: Callable[[], bool] | None = None,
) -> Generator[str, None, PlainResult]:
    """Yield text deltas as they become final; return the `PlainResult`.

    `max_tokens` is lowered to the room left in the context window. `cancelled` is polled
    between tokens; when it returns True `GenerationCancelled` ends the generation.
    """
    import torch

    prompt_ids = lm.encode_prompt(prompt, add_special_tokens=add_special_tokens)
    check_prompt(lm, prompt_ids, prompt)
    max_tokens = min(max_tokens, lm.context_window - len(prompt_ids))
    state = lm.new_state(prompt_ids)
    lm.feed(state)
    assert state.next_logits is not None
    logits = state.next_logits.unsqueeze(0)  # (1, V)
    ids: list[int] = []
    logprobs: list[float] = []
    text, sent = "", 0
    finish: Literal["stop", "length"] = "length"
    stop_reason: str | None = None
    for t in range(max_tokens):
        if cancelled is not None and cancelled():
            raise GenerationCancelled("generation cancelled")
        tok = sample_next(logits, temperature, top_p, generator)  # (1,)
        tid = int(tok[0])
        if tid in lm.eos_ids:
            finish = "stop"
            break
        ids.append(tid)
        logprobs.append(float(torch.log_softmax(logits[0].float(), dim=-1)[tid]))
        text = lm.decode(ids)
        hits = [(i, s) for i, s in ((text.find(s), s) for s in stop) if i >= 0]
        if hits:
            at, s = min(hits)
            text = text[: at + len(s)] if include_stop else text[:at]
            finish, stop_reason = "stop", s
            break
        ready = len(text) - _held_back(text, stop)
        if text[ready - 1 : ready] == "\ufffd":  # a multi-byte character not yet complete
            ready -= 1
        if ready > sent:
            yield text[sent:ready]
            sent = ready
        if t < max_tokens - 1:
            logits, _ = lm.step_batch(tok, state.cache, hidden=False)
    if len(text) > sent:
        yield text[sent:]
    pieces, offsets, pos = [], [], 0
    for i in range(len(ids)):
        piece = lm.decode(ids[: i + 1])[pos:]
        offsets.append(min(pos, len(text)))
        pieces.append(piece)
        pos += len(piece)
    if stop_reason is not None:
        # tokens past the cut text (the stop string itself, unless kept) are not reported
        keep = sum(1 for o, p in zip(offsets, pieces, strict=True) if o < len(text) or not p)
        ids, logprobs, offsets, pieces = ids[:keep], logprobs[:keep], offsets[:keep], pieces[:keep]
    return PlainResult(
        text=text,
        token_ids=ids,
        logprobs=logprobs,
        offsets=offsets,
        finish_reason=finish,
        stop_reason=stop_reason,
        prompt_tokens=len(prompt_ids),
        completion_tokens=len(ids),
        tokens=pieces,
    )

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
from ..errors import Cancelled

if TYPE_CHECKING:
    import torch

    from ..backends.local.model import LocalCausalLM
    from ..constraint import Constraint


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


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """Characters at the end of `text` that could begin a stop string."""
    hold = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:n]):
                hold = n
                break
    return hold


def _final_tokens(
    lm: LocalCausalLM, ids: list[int], text: str, stopped: bool
) -> tuple[list[int], list[str], list[int]]:
    """Each token's text piece and its character offset in `text`; when a stop string cut the
    text, the tokens past the cut (the stop string itself, unless kept) are dropped."""
    pieces, offsets, pos = [], [], 0
    for i in range(len(ids)):
        piece = lm.decode(ids[: i + 1])[pos:]
        offsets.append(min(pos, len(text)))
        pieces.append(piece)
        pos += len(piece)
    keep = len(ids)
    if stopped:
        keep = sum(1 for o, p in zip(offsets, pieces, strict=True) if o < len(text) or not p)
    return ids[:keep], pieces[:keep], offsets[:keep]


def _stop_hit(text: str, stop: tuple[str, ...], include_stop: bool) -> tuple[str, str] | None:
    """The text cut at the first stop string in it, and that string; None when none is."""
    hits = [(i, s) for i, s in ((text.find(s), s) for s in stop) if i >= 0]
    if not hits:
        return None
    at, s = min(hits)
    return (text[: at + len(s)] if include_stop else text[:at]), s


def _ready(text: str, stop: tuple[str, ...]) -> int:
    """Characters of `text` that are final: not a possible stop's start, not half a
    multi-byte character."""
    ready = len(text) - _held_back(text, stop)
    if text[ready - 1 : ready] == "\ufffd":  # a multi-byte character not yet complete
        ready -= 1
    return ready


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
    constraint: Constraint | None = None,
) -> Generator[str, None, PlainResult]:
    """Yield text deltas as they become final; return the `PlainResult`.

    `max_tokens` is lowered to the room left in the context window. `cancelled` is polled
    between tokens; when it returns True `errors.Cancelled` ends the generation. Under a
    `constraint` every token is sampled from what its grammar allows; the text ends when the
    grammar is complete.
    """
    import torch

    from ..backends.local.grammar import Matcher

    grammar = None if constraint is None else Matcher.start(lm, constraint)
    prompt_ids = lm.encode_prompt(prompt, add_special_tokens=add_special_tokens)
    check_prompt(lm, prompt_ids, prompt)
    max_tokens = min(max_tokens, lm.context_window - len(prompt_ids))
    state = lm.new_state(prompt_ids)
    lm.feed(state)
    assert state.next_logits is not None
    logits = state.next_logits.unsqueeze(0)  # (1, V)
    ids: list[int] = []
    logprobs: list[torch.Tensor] = []  # 0-d, on the device: read once at the end
    text, sent = "", 0
    finish: Literal["stop", "length"] = "length"
    stop_reason: str | None = None
    for t in range(max_tokens):
        if cancelled is not None and cancelled():
            raise Cancelled("generation cancelled")
        raw = logits  # what a logprob reports: the model's own distribution, unmasked
        if grammar is not None:
            logits = grammar.mask(logits.clone()[0]).unsqueeze(0)
        tok = sample_next(logits, temperature, top_p, generator)  # (1,)
        tid = int(tok.tolist()[0])  # the one read per token
        if tid in lm.eos_ids:
            finish = "stop"
            break
        if grammar is not None:
            grammar.take(tid)
        ids.append(tid)
        logprobs.append(torch.log_softmax(raw[0].float(), dim=-1)[tid])
        text = lm.decode(ids)
        hit = _stop_hit(text, stop, include_stop)
        if hit is not None and (grammar is None or grammar.accepting):  # not inside its text
            (text, stop_reason), finish = hit, "stop"
            break
        if (ready := _ready(text, stop)) > sent:
            yield text[sent:ready]
            sent = ready
        if grammar is not None and grammar.done:
            finish = "stop"
            break
        if t < max_tokens - 1:
            logits, _ = lm.step_batch([tid], state.cache, hidden=False)
    if len(text) > sent:
        yield text[sent:]
    ids, pieces, offsets = _final_tokens(lm, ids, text, stop_reason is not None)
    return PlainResult(
        text=text,
        token_ids=ids,
        logprobs=torch.stack(logprobs[: len(ids)]).tolist() if ids else [],
        offsets=offsets,
        finish_reason=finish,
        stop_reason=stop_reason,
        prompt_tokens=len(prompt_ids),
        completion_tokens=len(ids),
        tokens=pieces,
    )

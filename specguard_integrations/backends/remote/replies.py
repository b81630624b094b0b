"""A server's answer read into what a step needs (`Completion`): its end reason checked
(`end_reason`), and cut into a step (`to_candidate`) by the same rule the local models use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...engine.backends import DecodeSettings
from ...engine.candidate import Candidate, cut_text
from ...errors import EndpointAborted, EndpointReplyError
from ...types import StepFinish
from .profiles import Choice

# a reply may run this many tokens past the budget asked (engines count a stop string's tokens,
# or a token EOS shares, differently) before it is refused as over-long
LENGTH_SLACK_TOKENS = 8
# the most characters one token is taken to write; a reply with more text than the budget
# allows at this rate is refused even when its usage says otherwise
MAX_CHARS_PER_TOKEN = 64


# every finish_reason an engine sends that a step can take, as the step reads it (the table in
# docs/scale-out.md, "End reasons"); "abort", "tool_calls" and "function_call" raise, and so
# does any other value: none is ever read as a clean end
END_REASONS = {
    "stop": "stop",  # a stop string or EOS, told apart by the engine's profile
    "stop_sequence": "stop_sequence",  # TGI: one of the stop strings
    "length": "length",  # the budget asked, or the server's context window
    "eos": "eos",  # an end of sequence the engine names as such
    "eos_token": "eos",  # TGI's native name for it
    "content_filter": "content_filter",  # the engine's filter cut the text: the end, said so
}


def end_reason(finish: str, where: str) -> str:
    """A choice's ``finish_reason`` as a step reads it (`END_REASONS`); `EndpointAborted` for
    ``abort``, `EndpointReplyError` naming the value for a tool call the engine parsed out of
    the text and for any value not in the table."""
    if finish in END_REASONS:
        return END_REASONS[finish]
    if finish == "abort":
        raise EndpointAborted(
            f"{where} aborted the request (finish_reason 'abort': cancelled, preempted or"
            " failed on the engine): the step it wrote is not an answer"
        )
    if finish in ("tool_calls", "function_call"):
        raise EndpointReplyError(
            f"{where} answered finish_reason {finish!r}: it parsed a tool call out of the"
            " step's text, which is then not there to continue; serve the model without a tool"
            " parser (vLLM: no --enable-auto-tool-choice) or use api='completions'"
        )
    known = ", ".join([*END_REASONS, "abort", "tool_calls", "function_call"])
    raise EndpointReplyError(
        f"{where} answered malformed data: finish_reason {finish[:40]!r} is not one an engine"
        f" sends ({known})"
    )


def step_stops(settings: DecodeSettings) -> tuple[str, ...]:
    """The segmenter's stop hints and the caller's stop strings, without repeats."""
    return tuple(dict.fromkeys(settings.segmenter.stop_hints + settings.stop))


@dataclass
class Completion:
    """One answer of a server, read into what a step needs."""

    text: str  # generated text, with the boundary put back when the server stopped at it
    finish: str  # a value of END_REASONS
    stopped_at: bool  # the server stopped at one of our stop strings
    tokens: int  # completion tokens (from usage, else counted from logprobs, else estimated)
    prompt_tokens: int
    offsets: list[int] | None  # character offset per token, when logprobs came back
    logprobs: list[float] | None
    counted: bool = False  # `tokens` is the server's own count (usage or logprobs)
    reported: int = 0  # the choice's share of `usage.completion_tokens` (0: none reported)
    cached_tokens: int = 0  # prompt tokens the engine read from its own prefix cache


def check_length(c: Completion, max_tokens: int, where: str) -> None:
    """`EndpointReplyError` naming the server and the size when a reply is longer than the
    `max_tokens` asked (with `LENGTH_SLACK_TOKENS`), by its token count or its text."""
    allowed = max_tokens + LENGTH_SLACK_TOKENS
    tokens = max(c.tokens, c.reported)  # a server is held to the larger of its two counts
    if tokens > allowed or len(c.text) > allowed * MAX_CHARS_PER_TOKEN:
        raise EndpointReplyError(
            f"{where} answered {tokens} tokens ({len(c.text)} characters) where at most"
            f" {max_tokens} were asked for: the reply is refused"
        )


def to_candidate(c: Completion, settings: DecodeSettings) -> Candidate:
    """Cut a completion at the step boundary, counting the tokens of the kept text. A server
    that stopped at a step boundary ended a step, never the generation, even when the step is
    empty; only an end it reports as EOS ends the generation. A content filter's cut ends it
    too, and says so (`content_filter`), whatever the text holds."""
    cut = cut_text(c.text, settings.segmenter, settings.stop, settings.stop_tail)
    finish: StepFinish
    if c.finish == "content_filter":
        reach, text, finish = len(c.text), c.text, "content_filter"
    elif cut is not None:
        reach, text, finish = cut
    elif c.stopped_at:  # a stop at a boundary the segmenter does not count (an empty step)
        reach, text, finish = len(c.text), c.text, "boundary"
    elif c.finish == "length" and c.counted and c.tokens < settings.max_tokens:
        # cut for length short of the budget asked: the server's context window is full
        reach, text, finish = len(c.text), c.text, "context_window"
    elif c.finish == "length":
        reach, text, finish = len(c.text), c.text, "max_step_tokens"
    else:  # the model ended its answer (EOS) without a boundary
        reach, text, finish = len(c.text), c.text, "eos"
    if c.offsets:
        tokens = max(1, sum(1 for o in c.offsets if o < reach)) if reach else 0
    elif reach < len(c.text) and c.text:
        tokens = math.ceil(c.tokens * reach / len(c.text))
    else:
        tokens = c.tokens
    return Candidate(ids=[], text=text, finish=finish, num_tokens=tokens)


def read_echo(data: Any, head: str, step: str, where: str) -> list[float]:
    """The log-probabilities of `step`'s tokens from a ``/v1/completions`` answer that echoed
    ``head + step`` with ``logprobs``.

    Engines disagree on ``text_offset`` (vLLM counts a BOS token's text, llama-cpp-python
    renders special tokens as nothing, SGLang sends -1), so the tokens are placed by their own
    text instead, walking back from the end of the echoed text: the generated token(s) first,
    then the step's tokens (a token that straddles the context's end belongs to the step), down
    to the context. A token whose text is not the echoed text at its place, a missing or
    non-finite log-probability, or a positive one is an `EndpointReplyError`: a reply is never
    taken for more than it says."""
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    lp = first.get("logprobs") if isinstance(first, dict) else None
    if not isinstance(lp, dict):
        raise EndpointReplyError(f"{where} echoed no logprobs for the prompt")
    tokens, values = lp.get("tokens"), lp.get("token_logprobs")
    if not (isinstance(tokens, list) and isinstance(values, list)):
        raise EndpointReplyError(f"{where} echoed logprobs without tokens and their values")
    if len(tokens) != len(values) or not all(isinstance(t, str) for t in tokens):
        raise EndpointReplyError(f"{where} echoed logprobs whose lists do not match")
    text = first.get("text") if isinstance(first, dict) else None
    start, end = len(head), len(head) + len(step)
    if not isinstance(text, str) or not text.startswith(head + step):
        raise EndpointReplyError(f"{where} did not echo the prompt it was sent")
    if len(values) > len(text) + LENGTH_SLACK_TOKENS + 1:  # at most one token per character
        raise EndpointReplyError(f"{where} echoed {len(values)} tokens for {len(text)} characters")
    out: list[float] = []
    pos = len(text)
    for tok, value in zip(reversed(tokens), reversed(values), strict=True):
        if pos <= start:
            break
        if not text.endswith(tok, 0, pos):
            if pos == len(text):  # a generated end of sequence, which is not in the text
                continue
            raise EndpointReplyError(
                f"{where} echoed a token {tok[:20]!r} that is not the text at its place"
            )
        if pos - len(tok) < end:  # a token of the step
            out.append(_logprob(value, where))
        pos -= len(tok)
    if pos > start:
        raise EndpointReplyError(f"{where} echoed fewer tokens than the step has text")
    return out[::-1]


def _logprob(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise EndpointReplyError(f"{where} echoed no log-probability for a step token")
    if not math.isfinite(value) or value > 1e-3:
        raise EndpointReplyError(f"{where} echoed the log-probability {value!r}")
    return min(float(value), 0.0)


def settled(c: Choice, stop: str | bool | None, count: int) -> Completion:
    """A choice with its boundary question answered (`stop`: the stop string it ended at, or
    None), one of `count` choices of an answer: the boundary put back where the server cut it
    off, and its token count (usage counts all choices together: a choice's own count is its
    logprob tokens; without usage, the tokens' count, else an estimate from the text)."""
    text = c.text
    if isinstance(stop, str) and not text.endswith(stop):
        text += stop  # the server cut the boundary off: put it back
    own = len(c.tokens) if c.tokens is not None else None
    if count > 1 and own is not None:
        tokens = own
    elif c.completion_tokens is not None:
        tokens = c.completion_tokens // max(count, 1)
    else:
        tokens = own if own is not None else math.ceil(len(text) / 4)
    return Completion(
        text=text,
        finish=c.finish,
        stopped_at=isinstance(stop, str),
        tokens=tokens,
        prompt_tokens=c.prompt_tokens or 0,
        offsets=c.offsets,
        logprobs=c.logprobs,
        counted=c.tokens is not None or (c.completion_tokens is not None and count == 1),
        reported=(c.completion_tokens or 0) // max(count, 1),
    )

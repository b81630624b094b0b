"""A server's answer read into what a step needs (`Completion`), and cut into a step
(`to_candidate`) by the same rule the local models use."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from ...engine.backends import DecodeSettings
from ...engine.candidate import Candidate, cut_text
from .client import EndpointReplyError

# a reply may run this many tokens past the budget asked (engines count a stop string's tokens,
# or a token EOS shares, differently) before it is refused as over-long
LENGTH_SLACK_TOKENS = 8
# the most characters one token is taken to write; a reply with more text than the budget
# allows at this rate is refused even when its usage says otherwise
MAX_CHARS_PER_TOKEN = 64


def step_stops(settings: DecodeSettings) -> tuple[str, ...]:
    """The segmenter's stop hints and the caller's stop strings, without repeats."""
    return tuple(dict.fromkeys(settings.segmenter.stop_hints + settings.stop))


@dataclass
class Completion:
    """One answer of a server, read into what a step needs."""

    text: str  # generated text, with the boundary put back when the server stopped at it
    finish: str  # "stop" | "length" | other
    stopped_at: bool  # the server stopped at one of our stop strings
    tokens: int  # completion tokens (from usage, else counted from logprobs, else estimated)
    prompt_tokens: int
    offsets: list[int] | None  # character offset per token, when logprobs came back
    logprobs: list[float] | None
    counted: bool = False  # `tokens` is the server's own count (usage or logprobs)
    reported: int = 0  # the choice's share of `usage.completion_tokens` (0: none reported)


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
    empty; only an end it reports as EOS ends the generation."""
    cut = cut_text(c.text, settings.segmenter, settings.stop, settings.stop_tail)
    if cut is not None:
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
    ``head + step`` with ``logprobs``: the tokens whose text ends past `head` and starts
    before its end. Every list is checked (lengths, offsets, finite log-probabilities of at
    most 0): a reply is never taken for more than it says."""
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    lp = first.get("logprobs") if isinstance(first, dict) else None
    if not isinstance(lp, dict):
        raise EndpointReplyError(f"{where} echoed no logprobs for the prompt")
    tokens, offsets, values = lp.get("tokens"), lp.get("text_offset"), lp.get("token_logprobs")
    if not (isinstance(tokens, list) and isinstance(offsets, list) and isinstance(values, list)):
        raise EndpointReplyError(f"{where} echoed logprobs without tokens, offsets and values")
    if not len(tokens) == len(offsets) == len(values):
        raise EndpointReplyError(f"{where} echoed logprobs whose lists do not match")
    text = first.get("text") if isinstance(first, dict) else None
    end = len(head) + len(step)
    if not isinstance(text, str) or not text.startswith(head + step):
        raise EndpointReplyError(f"{where} did not echo the prompt it was sent")
    if len(values) > end + LENGTH_SLACK_TOKENS + 1:  # at most one token per character
        raise EndpointReplyError(f"{where} echoed {len(values)} tokens for {end} characters")
    ints = all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    if not ints or any(b < a for a, b in itertools.pairwise(offsets)):
        raise EndpointReplyError(f"{where} echoed token offsets that are not increasing")
    ends = [*offsets[1:], len(text)]
    out: list[float] = []
    for at, stop, value in zip(offsets, ends, values, strict=True):
        if stop <= len(head) or at >= end:
            continue  # a context token, or the one token generated after the step
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise EndpointReplyError(f"{where} echoed no log-probability for a step token")
        if not math.isfinite(value) or value > 1e-3:
            raise EndpointReplyError(f"{where} echoed the log-probability {value!r}")
        out.append(min(float(value), 0.0))
    return out

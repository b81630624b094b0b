"""A server's answer read into what a step needs (`Completion`), and cut into a step
(`to_candidate`) by the same rule the local models use."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...engine.backends import DecodeSettings
from ...engine.candidate import Candidate, cut_text


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


def to_candidate(c: Completion, settings: DecodeSettings) -> Candidate:
    """Cut a completion at the step boundary, counting the tokens of the kept text."""
    cut = cut_text(c.text, settings.segmenter, settings.stop, settings.stop_tail)
    if cut is not None:
        reach, text, finish = cut
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

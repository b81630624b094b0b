"""A candidate step, the type every backend returns from steps 1 and 5, and where a step
written so far ends (`cut_text`), the rule every backend cuts its steps by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..segmentation import StepSegmenter
    from ..types import StepFinish


@dataclass
class Candidate:
    """One sampled step: its kept tokens (EOS excluded), text, and why it ended.

    A remote model's step has no ids; its writer counted its tokens (`num_tokens`).
    """

    ids: list[int]
    text: str
    finish: StepFinish
    eos_id: int | None = None  # the EOS that ended the step (scored, not part of the text)
    embedding: torch.Tensor | None = None  # (d,) mean hidden state over the step
    fed: int = 0  # kept tokens already in the cache after sampling (k = 1 with keep_cache)
    num_tokens: int = -1  # tokens of the step in its writer's tokenizer (default: len(ids))
    grammar: object | None = None  # under a constraint: its writer's grammar state after the step

    def __post_init__(self) -> None:
        if self.num_tokens < 0:
            self.num_tokens = len(self.ids)

    @property
    def scored_ids(self) -> list[int]:
        """Tokens the draft is judged on: the step, plus EOS when it chose to stop."""
        return self.ids + ([self.eos_id] if self.eos_id is not None else [])


def cut_text(
    text: str, segmenter: StepSegmenter, stop: tuple[str, ...], tail: str = ""
) -> tuple[int, str, StepFinish] | None:
    """Where the step written so far as `text` ends, if it has: (characters reached, kept text,
    finish). Backends that see only text (a remote target) use this directly.

    `tail` is the end of the text committed before this step, so a stop sequence that starts
    there and ends in this step is found too (the step is then cut at its start). For a stop,
    the characters reached run to the stop string's end (the tokens that wrote it are scored)
    while the kept text ends before it.
    """
    boundary = segmenter.find(text)
    seen = tail + text
    hits = [(i, i + len(s)) for i, s in ((seen.find(s), s) for s in stop) if i >= 0]
    if hits:
        start, end = min(hits)
        at = max(0, start - len(tail))
        if boundary is None or at < boundary.end:
            return end - len(tail), text[:at], "stop"
    if boundary is None:
        return None
    return boundary.end, text[: boundary.end], boundary.kind

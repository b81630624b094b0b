"""The data a local model's calls exchange: a generation's sequence state, a forward's output,
and the jobs a runner runs."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ...engine.backends import DecodeSettings
    from ...engine.candidate import Candidate


@dataclass
class SeqState:
    """Token ids of prompt + committed steps, and the KV cache covering `ids[:fed]`."""

    ids: list[int]
    cache: Any
    fed: int = 0
    next_logits: torch.Tensor | None = None  # (V,) after ids[fed - 1]; valid when fed == len(ids)
    next_hidden: torch.Tensor | None = None  # (d,) last hidden state at ids[fed - 1]
    # rollout mass vectors m_0..m_n of every fed position (see signals.propagate_mass)
    mass: list[torch.Tensor] | None = None

    @property
    def pending(self) -> int:
        return len(self.ids) - self.fed


@dataclass
class FeedOut:
    logits: torch.Tensor  # (K, V) at the last K fed positions kept (all T when none was asked)
    hidden: torch.Tensor | None = None  # (K, d) last hidden state at the same positions
    # per fed chunk, per rollout layer (lowest first): attention (H, Tc, Tk) of the chunk's rows
    rows: list[list[torch.Tensor]] | None = None


@dataclass
class ForwardJob:
    """Tokens to run over one sequence's cache (at the cache's length), as
    `LocalCausalLM.forward` would; the keys are appended to the cache."""

    cache: Any
    tokens: list[int]
    layers: int = 0  # last layers whose attention rows are returned
    hidden: bool = False
    keep: int | None = None  # last positions whose logits are returned (None: all)
    out: FeedOut | None = None  # once run
    error: BaseException | None = None


@dataclass
class DecodeJob:
    """One request's candidate sampling (`sampling.sample_steps`' arguments)."""

    state: SeqState  # all ids fed
    settings: DecodeSettings
    generator: torch.Generator | None
    keep_cache: bool = False
    out: list[Candidate] | None = None  # candidates once run
    error: BaseException | None = None


def keep_history(cache: Any) -> None:
    """Make every sliding-window layer of a fresh `DynamicCache` keep all its past states, so it
    can be cropped back to any length, as a full layer can. transformers' layer (with past
    recording) keeps them only until its next crop, which cuts it back to its window: a second
    rollback, or a cached prefix cropped further back, would find its states gone. What a
    forward sees is unchanged: the layer still returns and masks its window."""
    cache.activate_past_recording()
    for layer in getattr(cache, "layers", ()):
        kind: Any = type(layer)
        if getattr(layer, "is_sliding", False) and kind.__name__ == "DynamicSlidingWindowLayer":
            layer.__class__ = _history_layer(kind)


@functools.cache
def _history_layer(base: Any) -> type:
    """`base` (transformers' `DynamicSlidingWindowLayer`) with a crop that removes exactly the
    states asked for and keeps the rest."""

    def crop(self: Any, max_length: int) -> None:
        total = int(self.cumulative_length)
        keep = total + max_length if max_length < 0 else max_length
        if keep >= total or self.keys is None:
            return
        keep = max(keep, 0)
        # with every past state kept, position p is at index p of the layer's states
        self.keys = self.keys[..., :keep, :]
        self.values = self.values[..., :keep, :]
        self.cumulative_length = keep

    return type("HistorySlidingWindowLayer", (base,), {"crop": crop, "__module__": __name__})

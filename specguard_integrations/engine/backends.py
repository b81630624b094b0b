"""Draft and target backends: the small interfaces the step loop talks to.

A backend starts a *session* per generation; the session owns that generation's sequence state
(KV cache, ids) so concurrent generations never share mutable state. The loop only calls the
session methods below and exchanges `Candidate`s and plain text (plus token ids when both models
share a vocabulary).

- `DraftSession`: propose k candidates (1), select one (2), score it (3, tentatively appending
  it), accept or reject it, and take the target's text when the target wrote a step (5).
- `TargetSession`: take accepted draft text, and write a fallback step (5).

Both answer `tokens_left` (room before the context window), `device` (where their sampling
generator lives) and `vocab_id` (equal ids: token ids can be exchanged).

Implementations: `local.LocalDraft` / `local.LocalTarget` run a Hugging Face model in process;
`endpoint.EndpointDraft` / `endpoint.EndpointTarget` reach an OpenAI-compatible server;
`specguard_integrations.langchain.LangChainTarget` wraps any LangChain model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from typing import TypeAlias

    import torch

    from ..config import SpecGuardConfig
    from ..segmentation import StepSegmenter
    from .proposer import Candidate

    Rng: TypeAlias = torch.Generator | None  # a generation's sampling generator

# what a session without a context window (a remote model) reports as its room
UNBOUNDED = 1 << 30


@dataclass(frozen=True)
class StepSignals:
    """Raw draft signals of one step (before normalisation)."""

    confidence: float
    grounding: float | None  # None: not read (no attention access, or the ablation)


@dataclass(frozen=True)
class SignalSettings:
    """How step 3 reads the draft's forward pass; fixed for a generation, because the rollout
    mass of committed positions is computed as they are fed."""

    use_grounding: bool = True
    rollout_layers: int = 3
    attention_cut: float = 0.01
    rollout_residual: bool = False
    rollout_renormalize: bool = False
    exclude_sink_positions: int = 0
    attention_heads: str | tuple[int, ...] = "mean"
    grounding_aggregate: str = "min"
    grounding_quantile: float = 0.1
    grounding_target: str = "context"
    confidence_aggregate: str = "min"
    selector: str = "hidden_mean"

    @classmethod
    def from_config(cls, config: SpecGuardConfig) -> SignalSettings:
        """The config's fields of the same names."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class DecodeSettings:
    """How one step is written (steps 1 and 5)."""

    k: int
    temperature: float
    top_p: float
    max_tokens: int
    segmenter: StepSegmenter
    stop: tuple[str, ...] = ()
    stop_tail: str = ""  # end of the committed text, to catch stops spanning a boundary
    target_speculation: int = 0  # greedy target step: draft tokens proposed per target forward


@dataclass(frozen=True)
class DraftAssist:
    """What a draft lends the target's greedy fallback to speculate with (local, shared
    vocabulary): the draft model, its sequence state at the same context, and the step it just
    rejected there (proposed first)."""

    lm: Any  # LocalCausalLM
    state: Any  # SeqState
    rejected: list[int]


class DraftSession(Protocol):
    prompt_tokens: int
    device: Any  # where the sampling generator lives (str or torch.device)
    vocab_id: str | None

    @property
    def tokens_left(self) -> int: ...

    def shares_vocab_with(self, target: TargetSession) -> bool: ...

    def propose(self, settings: DecodeSettings, generator: Rng) -> list[Candidate]: ...

    def select(self, candidates: list[Candidate]) -> int: ...

    def score(self, candidate: Candidate) -> StepSignals: ...

    def accept(self) -> None: ...

    def reject(self) -> None: ...

    def append(self, text: str, ids: list[int] | None) -> None: ...

    def assist(self) -> DraftAssist | None:
        """What the target's greedy fallback may speculate with, or None."""
        ...


class TargetSession(Protocol):
    prompt_tokens: int
    device: Any
    vocab_id: str | None

    @property
    def tokens_left(self) -> int: ...

    def append(self, text: str, ids: list[int] | None) -> None: ...

    def write_step(
        self, settings: DecodeSettings, generator: Rng, assist: DraftAssist | None = None
    ) -> Candidate:
        """Write the fallback step. `assist` may speed up a greedy step; the text must not
        depend on it."""
        ...


class DraftModel(Protocol):
    name: str

    @property
    def supports_grounding(self) -> bool: ...

    def start(
        self, prompt: str, signals: SignalSettings, *, add_special_tokens: bool = True
    ) -> DraftSession: ...


class TargetModel(Protocol):
    name: str

    def start(self, prompt: str, *, add_special_tokens: bool = True) -> TargetSession: ...


def as_draft(model: Any) -> DraftModel:
    """A `DraftModel`: the object itself, or a local Hugging Face model wrapped for the loop."""
    from .lm import LocalCausalLM
    from .local import LocalDraft

    return LocalDraft(model) if isinstance(model, LocalCausalLM) else model


def as_target(model: Any) -> TargetModel:
    """A `TargetModel`: the object itself, or a local Hugging Face model wrapped for the loop."""
    from .lm import LocalCausalLM
    from .local import LocalTarget

    return LocalTarget(model) if isinstance(model, LocalCausalLM) else model


def check_text(text: object, what: str = "prompt") -> str:
    """`text` if it is a string UTF-8 can encode, else `TypeError`/`ValueError` naming the
    problem and the position (a lone surrogate such as '\\ud800' cannot be tokenised)."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} cannot be encoded as UTF-8: character {err.start} is {text[err.start]!r}"
            f" ({err.reason})"
        ) from None
    return text


def check_prompt_text(prompt: object) -> str:
    """The prompt, or `TypeError`/`ValueError` naming what is wrong with it."""
    text = check_text(prompt)
    if not text.strip():
        raise ValueError("prompt is empty")
    return text

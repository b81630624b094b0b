"""Draft and target backends: the small interfaces the step loop talks to.

A backend starts a *session* per generation; the session owns that generation's sequence state
(KV cache, ids) so concurrent generations never share mutable state. The loop only calls the
session methods below and exchanges `Candidate`s and plain text (plus token ids when both models
share a vocabulary).

- `DraftSession`: propose k candidates (1), select one (2), score it (3, tentatively appending
  it), accept or reject it, and take the target's text when the target wrote a step (5).
- `TargetSession`: take accepted draft text, and write a fallback step (5).

Both answer `tokens_left` (room before the context window), `device` (where their sampling
generator lives), `vocab_id` (equal ids: token ids can be exchanged) and `local` (whether their
calls run in this process, where a runtime may group them, or wait on a server).

A model declares `local_model`: the `TextModel` that runs in this process (its tokenizer, chat
template, context window and device), or None for a remote one. Adapters, the server and the
CLI read a pair's text conventions from there, never from a concrete backend.

Implementations: `backends.local` (`LocalDraft` / `LocalTarget`) runs a Hugging Face model in
process; `backends.remote` (`EndpointDraft` / `EndpointTarget`) reaches an OpenAI-compatible
server; `specguard_integrations.langchain.LangChainTarget` wraps any LangChain model. The loop
imports none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import InvalidInputError, InvalidTypeError

if TYPE_CHECKING:
    from typing import TypeAlias

    import torch

    from ..config import SpecGuardConfig
    from ..constraint import Constraint
    from ..segmentation import StepSegmenter
    from .candidate import Candidate

    Rng: TypeAlias = torch.Generator | None  # a generation's sampling generator

# what a session without a context window (a remote model) reports as its room
UNBOUNDED = 1 << 30


@dataclass(frozen=True)
class StepSignals:
    """Raw signals of one step (before normalisation): the draft's, and the target's token
    log-probabilities when the judge reads them."""

    confidence: float
    grounding: float | None  # None: not read (no attention access, or the ablation)
    # log p_target(s_t | ctx, s_<t) of each step token, in the target's tokenizer (a judge that
    # reads the target); None otherwise
    target_logprobs: tuple[float, ...] | None = None


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
    # `time.monotonic()` by which the generation must end (its `timeout`): a backend that waits
    # on a server bounds its requests by it; None: no deadline
    deadline: float | None = None
    constraint: Constraint | None = None  # the grammar the whole generated text must match

    def for_target(self, config: SpecGuardConfig, shared_vocab: bool) -> DecodeSettings:
        """5. The settings the target writes a fallback step with: greedy (token-level
        speculation where the pair shares a vocabulary and no grammar constrains the step), or
        `target_k` samples."""
        greedy = config.target_mode == "greedy"
        # a constrained step is sampled under the target's own grammar state: no speculation
        plain = self.constraint is None
        speculate = config.target_speculation if greedy and shared_vocab and plain else 0
        return dataclasses.replace(
            self,
            k=config.effective_target_k,
            temperature=0.0 if greedy else max(config.temperature, 1e-5),
            top_p=1.0 if greedy else config.top_p,
            target_speculation=speculate,
        )


class DraftAssist:
    """What a draft lends the target's greedy fallback to speculate with. The loop passes it
    from the draft's session to the target's without looking inside; a target that cannot use
    the kind it gets ignores it."""


class TextModel(Protocol):
    """A model that runs in this process, seen from its text side."""

    name: str
    tokenizer: Any
    special_texts: tuple[str, ...]  # role markers, end of turn: never part of content
    context_window: int
    device: Any

    @property
    def has_chat_template(self) -> bool: ...

    def render_chat(self, messages: list[dict[str, Any]], *, tools: list[Any] | None = None) -> str:
        """The chat template applied to messages, with the assistant turn opened."""
        ...

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]: ...


class DraftSession(Protocol):
    prompt_tokens: int
    cached_tokens: int  # prompt tokens not read again: a prefix cache's (local or the server's)
    device: Any  # where the sampling generator lives (str or torch.device)
    vocab_id: str | None
    local: bool  # calls run in this process (a runtime may group them), not on a server

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

    def finish(self) -> None:
        """The generation is over: what the session read may be kept for later calls (a local
        model's prefix cache). Never raises; the session is not used after."""
        ...


class TargetSession(Protocol):
    prompt_tokens: int
    cached_tokens: int
    device: Any
    vocab_id: str | None
    local: bool

    @property
    def tokens_left(self) -> int: ...

    def append(self, text: str, ids: list[int] | None) -> None: ...

    def write_step(
        self, settings: DecodeSettings, generator: Rng, assist: DraftAssist | None = None
    ) -> Candidate:
        """Write the fallback step. `assist` may speed up a greedy step; the text must not
        depend on it."""
        ...

    def verify(
        self, text: str, ids: list[int] | None, deadline: float | None, *, eos: bool = False
    ) -> list[float]:
        """Take the draft step tentatively and return ``log p_target(s_t | ctx, s_<t)`` of each
        of its tokens (in the target's tokenizer): the catch-up prefill the target owes an
        accepted step anyway. `ids` are the step's tokens when the pair shares a vocabulary
        (EOS included when `eos`); `eos`: the step ended the text, and a target that can score
        its own end of sequence there does. `accept` keeps the step (no second prefill),
        `reject` drops it (the next `write_step` starts where the step would have)."""
        ...

    def accept(self) -> None: ...

    def reject(self) -> None: ...

    def finish(self, *, read: bool = False) -> None:
        """The generation is over: what the session read may be kept for later calls. `read`
        (the generation ended cleanly, within its deadline, with a prefix cache on) allows a
        target that keeps a cache to first read what it committed but has not read yet (the
        prompt and the accepted draft steps), when that is long enough to matter to a later
        call that continues the text (an agent's next turn); a local target does so from
        `READ_AT_END` tokens, a remote one never. Never raises."""
        ...


@runtime_checkable
class DraftModel(Protocol):
    name: str

    @property
    def supports_grounding(self) -> bool: ...

    @property
    def local_model(self) -> TextModel | None:
        """The model when it runs in this process, else None."""
        ...

    def start(
        self,
        prompt: str,
        signals: SignalSettings,
        *,
        add_special_tokens: bool = True,
        prefix_cache: int = 0,
        deadline: float | None = None,
    ) -> DraftSession:
        """A session for one generation. `prefix_cache`: the bytes a local model may keep of
        what it reads across calls (`SpecGuardConfig.prefix_cache_bytes`; 0: none);
        `deadline`: the generation's (monotonic seconds), which a remote model's first
        requests (reading which engine serves it) end by too."""
        ...


@runtime_checkable
class TargetModel(Protocol):
    name: str

    @property
    def local_model(self) -> TextModel | None: ...

    def verify_refusal(self) -> str | None:
        """None when sessions can `verify` a step (the target-verified judge); else why not,
        naming the target (an engine that returns no prompt log-probabilities)."""
        ...

    def start(
        self,
        prompt: str,
        *,
        add_special_tokens: bool = True,
        prefix_cache: int = 0,
        deadline: float | None = None,
    ) -> TargetSession:
        """As `DraftModel.start`."""
        ...


class Runtime(Protocol):
    """What runs a pair's model calls for many generations at once (`specguard_integrations
    .runtime`): it counts the generations that may add to a grouped call."""

    def generation(self) -> contextlib.AbstractContextManager[None]:
        """Held while a generation runs."""
        ...

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Held while a running generation adds nothing (its consumer has a step, or it waits
        on a server)."""
        ...


class NoRuntime:
    """Each generation's calls run as they come (no grouping to wait for)."""

    @contextlib.contextmanager
    def generation(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        yield


def check_text(text: object, what: str = "prompt") -> str:
    """`text` if it is a string UTF-8 can encode, else `TypeError`/`ValueError` naming the
    problem and the position (a lone surrogate such as '\\ud800' cannot be tokenised)."""
    if not isinstance(text, str):
        raise InvalidTypeError(f"{what} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidInputError(
            f"{what} cannot be encoded as UTF-8: character {err.start} is {text[err.start]!r}"
            f" ({err.reason})"
        ) from None
    return text


def check_prompt_text(prompt: object) -> str:
    """The prompt, or `TypeError`/`ValueError` naming what is wrong with it."""
    text = check_text(prompt)
    if not text.strip():
        raise InvalidInputError("prompt is empty")
    return text

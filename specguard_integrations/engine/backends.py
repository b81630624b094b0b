"""Draft and target backends: the two small interfaces the step loop talks to.

A backend starts a *session* per generation; the session owns that generation's sequence state
(KV cache, ids) so concurrent generations never share mutable state. The loop only calls the
session methods below and exchanges `Candidate`s and plain text (plus token ids when both models
share a vocabulary).

- `DraftSession`: propose k candidates, score the selected one (tentatively appending it),
  accept or reject it, and take the target's text when the target wrote a step.
- `TargetSession`: take accepted draft text, and write a fallback step.

`LocalDraft` / `LocalTarget` run a Hugging Face model in process. Other targets (an
OpenAI-compatible server, a LangChain chat model) implement `TargetModel` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import signals
from .lm import AttentionUnavailable, LocalCausalLM, SeqState
from .proposer import Candidate, sample_steps

if TYPE_CHECKING:
    import torch

    from ..config import SpecGuardConfig
    from ..segmentation import StepSegmenter


@dataclass
class StepSignals:
    """Raw draft signals of one step (before normalisation)."""

    confidence: float
    grounding: float | None  # None: no attention access (confidence-only)
    logprobs: torch.Tensor  # (T,) per scored token


@dataclass(frozen=True)
class DecodeSettings:
    k: int
    temperature: float
    top_p: float
    max_tokens: int
    segmenter: StepSegmenter
    stop: tuple[str, ...] = ()
    stop_tail: str = ""  # end of the committed text, to catch stops spanning a boundary
    speculate: int = 0  # greedy target step: draft tokens proposed per target forward


class DraftSession(Protocol):
    prompt_tokens: int

    def propose(
        self, settings: DecodeSettings, generator: torch.Generator | None
    ) -> list[Candidate]: ...

    def score(self, candidate: Candidate) -> StepSignals: ...

    def accept(self) -> None: ...

    def reject(self) -> None: ...

    def append(self, text: str, ids: list[int] | None) -> None: ...


class TargetSession(Protocol):
    prompt_tokens: int

    def append(self, text: str, ids: list[int] | None) -> None: ...

    def write_step(
        self,
        settings: DecodeSettings,
        generator: torch.Generator | None,
        assistant: DraftSession | None = None,
    ) -> Candidate:
        """Write the fallback step. `assistant` (the generation's draft session, positioned at
        the same context) may speed up a greedy step; the text must not depend on it."""
        ...


class DraftModel(Protocol):
    name: str
    supports_grounding: bool

    def start(
        self, prompt: str, config: SpecGuardConfig, *, add_special_tokens: bool = True
    ) -> DraftSession: ...


class StepVerifier(Protocol):
    """An external judge of a draft step (a process reward model): the reward-guided baseline.

    `score` returns a value in [0, 1]; the loop accepts the step iff it is >= tau.
    """

    name: str

    def score(self, context: str, step: str) -> float: ...


class TargetModel(Protocol):
    name: str

    def start(self, prompt: str, *, add_special_tokens: bool = True) -> TargetSession: ...


def _sample(
    lm: LocalCausalLM,
    state: SeqState,
    settings: DecodeSettings,
    generator: torch.Generator | None,
    *,
    keep_cache: bool = False,
) -> list[Candidate]:
    """`sample_steps` with one step's decode settings (embeddings only when k > 1)."""
    return sample_steps(
        lm,
        state,
        k=settings.k,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_tokens,
        segmenter=settings.segmenter,
        stop=settings.stop,
        generator=generator,
        embed=settings.k > 1,
        keep_cache=keep_cache,
        stop_tail=settings.stop_tail,
    )


def check_prompt(lm: LocalCausalLM, ids: list[int], prompt: str) -> None:
    if not prompt or not prompt.strip():
        raise ValueError("prompt is empty")
    if len(ids) >= lm.context_window:
        raise ValueError(
            f"prompt is {len(ids)} tokens but {lm.name} has a context window of"
            f" {lm.context_window}: no room to generate"
        )


class LocalDraft:
    """A local Hugging Face draft: samples candidates, and scores with its own forward pass."""

    def __init__(self, lm: LocalCausalLM) -> None:
        self.lm = lm
        self.name = lm.name

    @property
    def supports_grounding(self) -> bool:
        return self.lm.supports_attention

    def start(
        self, prompt: str, config: SpecGuardConfig, *, add_special_tokens: bool = True
    ) -> LocalDraftSession:
        ids = self.lm.encode_prompt(prompt, add_special_tokens=add_special_tokens)
        check_prompt(self.lm, ids, prompt)
        return LocalDraftSession(self.lm, ids, config)


class LocalDraftSession:
    """Draft state of one generation. Step 3 (score) lives here because it needs the cache."""

    def __init__(self, lm: LocalCausalLM, prompt_ids: list[int], config: SpecGuardConfig) -> None:
        self.lm = lm
        self.cfg = config
        self.grounding = config.use_grounding and lm.supports_attention
        self.layers = min(config.rollout_layers, lm.num_layers)
        self.state: SeqState = lm.new_state(prompt_ids)
        self.prompt_tokens = len(prompt_ids)
        self._tentative: tuple[int, torch.Tensor, torch.Tensor | None, list[torch.Tensor]] | None
        self._tentative = None
        # the step last rejected at this context (cleared once the context moves on): the
        # target's speculative fallback proposes it first
        self.rejected: list[int] = []
        self._feed_committed()

    @property
    def context_len(self) -> int:
        return len(self.state.ids)

    def _feed_committed(self) -> None:
        """Feed pending context ids; with grounding, extend the cached rollout mass vectors."""
        start = self.state.fed
        try:
            out = self.lm.feed(self.state, rollout_layers=self._layers(), hidden=True)
        except AttentionUnavailable:
            self.grounding = False
            out = self.lm.feed(self.state, hidden=True)
        if out.rows is not None:
            pos = start
            for chunk in out.rows:
                rows = [self._process(a) for a in chunk]
                n = rows[0].shape[0]
                ctx = self._context_indicator(pos, n, committed=True)
                self._extend_mass(signals.propagate_mass(rows, self._prev_mass(pos), ctx))
                pos += n

    def _layers(self) -> int:
        return self.layers if self.grounding else 0

    def _process(self, attn: torch.Tensor) -> torch.Tensor:
        return signals.process_attention(
            attn,
            cut=self.cfg.attention_cut,
            renormalize=self.cfg.rollout_renormalize,
            residual=self.cfg.rollout_residual,
        )

    def _context_indicator(self, start: int, n: int, *, committed: bool) -> torch.Tensor:
        """m_0 of positions start..start+n: 1 for context, 0 for the step and excluded sinks."""
        import torch

        ctx = torch.full((n,), 1.0 if committed else 0.0, device=self.lm.device)
        sinks = self.cfg.exclude_sink_positions
        if committed and start < sinks:
            ctx[: min(n, sinks - start)] = 0.0
        return ctx

    def _prev_mass(self, upto: int) -> list[torch.Tensor]:
        import torch

        if self.state.mass is None:
            empty = torch.zeros(0, device=self.lm.device)
            return [empty] * (self.layers + 1)
        return [m[:upto] for m in self.state.mass]

    def _extend_mass(self, new: list[torch.Tensor]) -> None:
        import torch

        if self.state.mass is None:
            self.state.mass = new
        else:
            self.state.mass = [torch.cat([m, n]) for m, n in zip(self.state.mass, new, strict=True)]

    # 1. propose
    def propose(
        self, settings: DecodeSettings, generator: torch.Generator | None
    ) -> list[Candidate]:
        return _sample(self.lm, self.state, settings, generator)

    # 3. score
    def score(self, candidate: Candidate) -> StepSignals:
        """Append the step tentatively and read both signals from one forward pass.

        ``l = min_t log p(s_t)`` from the logits; ``g = min_t G(t)`` from the rollout of the
        step's attention rows with the step itself not counted as context.
        """
        import torch

        if self._tentative is not None:
            raise RuntimeError("score() called twice without accept() or reject()")
        tokens = candidate.scored_ids
        if not tokens:
            raise ValueError("cannot score an empty step")
        base = len(self.state.ids)
        before_logits, before_hidden = self.state.next_logits, self.state.next_hidden
        assert before_logits is not None
        self.state.ids.extend(tokens)
        try:
            try:
                out = self.lm.feed(self.state, rollout_layers=self._layers(), hidden=True)
            except AttentionUnavailable:
                self.grounding = False
                out = self.lm.feed(self.state, hidden=True)
        except BaseException:
            del self.state.ids[base:]
            raise
        # logits predicting token t: the context's last logits, then the step's own positions
        pred = torch.cat([before_logits.unsqueeze(0), out.logits[:-1]])  # (T, V)
        logprobs = signals.token_logprobs(pred, torch.tensor(tokens, device=pred.device))
        g = None
        committed_mass: list[torch.Tensor] = []
        if out.rows is not None:
            rows = [self._process(a) for a in out.rows[0]]  # (T, base + T) each
            n = len(tokens)
            prev = self._prev_mass(base)
            step_mass = signals.propagate_mass(
                rows, prev, self._context_indicator(base, n, committed=False)
            )
            g = signals.grounding(step_mass)
            committed_mass = signals.propagate_mass(
                rows, prev, self._context_indicator(base, n, committed=True)
            )
        self._tentative = (base, before_logits, before_hidden, committed_mass)
        return StepSignals(confidence=signals.confidence(logprobs), grounding=g, logprobs=logprobs)

    def accept(self) -> None:
        if self._tentative is None:
            raise RuntimeError("accept() without a scored step")
        committed_mass = self._tentative[3]
        if committed_mass:
            self._extend_mass(committed_mass)
        self._tentative = None
        self.rejected = []

    def reject(self) -> None:
        """Crop the rejected step from the draft cache; the context is as before `score`."""
        if self._tentative is None:
            raise RuntimeError("reject() without a scored step")
        base, logits, hidden, _ = self._tentative
        self.rejected = self.state.ids[base:]
        self.lm.rollback(self.state, base)
        self.state.fed = base
        self.state.next_logits, self.state.next_hidden = logits, hidden
        self._tentative = None

    # 5. the target wrote the step
    def append(self, text: str, ids: list[int] | None) -> None:
        if self._tentative is not None:
            raise RuntimeError("append() while a scored step is pending")
        self.rejected = []
        new = ids if ids is not None else self.lm.encode_continuation(text)
        if not new:
            return
        base = len(self.state.ids)
        self.state.ids.extend(new)
        try:
            self._feed_committed()
        except BaseException:
            self.lm.rollback(self.state, base)
            raise


class LocalTarget:
    """A local Hugging Face target: writes fallback steps, catching up on accepted text lazily."""

    def __init__(self, lm: LocalCausalLM) -> None:
        self.lm = lm
        self.name = lm.name

    def start(self, prompt: str, *, add_special_tokens: bool = True) -> LocalTargetSession:
        ids = self.lm.encode_prompt(prompt, add_special_tokens=add_special_tokens)
        check_prompt(self.lm, ids, prompt)
        return LocalTargetSession(self.lm, ids)


class LocalTargetSession:
    def __init__(self, lm: LocalCausalLM, prompt_ids: list[int]) -> None:
        self.lm = lm
        # the prompt is not fed until the target is first needed: a run whose every step the
        # draft writes never runs the target at all
        self.state = lm.new_state(prompt_ids)
        self.prompt_tokens = len(prompt_ids)

    def append(self, text: str, ids: list[int] | None) -> None:
        self.state.ids.extend(ids if ids is not None else self.lm.encode_continuation(text))

    def write_step(
        self,
        settings: DecodeSettings,
        generator: torch.Generator | None,
        assistant: DraftSession | None = None,
    ) -> Candidate:
        from .proposer import speculative_step
        from .selection import select

        helper = getattr(assistant, "state", None)
        if (
            settings.speculate > 0
            and settings.k == 1
            and settings.temperature == 0.0
            and isinstance(assistant, LocalDraftSession)
            and helper is not None
            and assistant.lm.same_vocab(self.lm)
        ):
            return speculative_step(
                self.lm,
                self.state,
                assistant.lm,
                helper,
                gamma=settings.speculate,
                max_tokens=settings.max_tokens,
                segmenter=settings.segmenter,
                stop=settings.stop,
                stop_tail=settings.stop_tail,
                first=assistant.rejected or None,
            )
        if self.state.pending:
            self.lm.feed(self.state, hidden=settings.k > 1)  # one batched catch-up prefill
        cands = _sample(self.lm, self.state, settings, generator, keep_cache=settings.k == 1)
        if len(cands) == 1:
            best = cands[0]
        else:
            import torch

            best = cands[
                select(torch.stack([c.embedding for c in cands if c.embedding is not None]))
            ]
        base = len(self.state.ids)
        self.state.ids.extend(best.ids)
        self.state.fed = base + best.fed
        if best.fed:
            self.state.next_logits = self.state.next_hidden = None
        return best

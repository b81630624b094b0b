"""The local Hugging Face draft: it samples, selects and scores with its own forward pass
(the target is in `target.py`), and what both local sessions share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...engine import signals
from ...engine.backends import (
    DecodeSettings,
    DraftAssist,
    SignalSettings,
    StepSignals,
    TargetSession,
    TextModel,
    check_prompt_text,
)
from ...engine.candidate import Candidate
from ...engine.selection import select
from ...errors import InvalidInputError, StateError
from .grammar import Matcher
from .model import AttentionUnavailable, LocalCausalLM
from .prefix_cache import keep_state, start_state
from .sampling import sample_steps
from .state import FeedOut, SeqState

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from ...engine.backends import Rng

    OnRows = Callable[[list[torch.Tensor], int], None]


def _medoid(candidates: list[Candidate]) -> int:
    """2. select: the hidden-state medoid (index 0 when there is one candidate)."""
    import torch

    if len(candidates) == 1:
        return 0
    emb = [c.embedding for c in candidates if c.embedding is not None]
    if len(emb) != len(candidates):
        raise InvalidInputError("selecting among candidates needs every candidate's embedding")
    return select(torch.stack(emb))


def check_prompt(lm: TextModel, ids: list[int], prompt: str) -> None:
    """`ValueError` for an empty prompt, or one (`ids`) that leaves no room to generate."""
    check_prompt_text(prompt)
    if len(ids) >= lm.context_window:
        raise InvalidInputError(
            f"prompt is {len(ids)} tokens but {lm.name} has a context window of"
            f" {lm.context_window}: no room to generate"
        )


def _grammar(
    lm: LocalCausalLM, current: Matcher | None, settings: DecodeSettings, so_far: list[int]
) -> Matcher | None:
    """The session's grammar state: started at its first constrained step over the step tokens
    committed before it (`so_far`), kept after."""
    if settings.constraint is None:
        return None
    if current is None:
        current = Matcher.start(lm, settings.constraint)
        current.follow(so_far)
    return current


def _start_ids(lm: LocalCausalLM, prompt: str, add_special_tokens: bool) -> list[int]:
    ids = lm.encode_prompt(prompt, add_special_tokens=add_special_tokens)
    check_prompt(lm, ids, prompt)
    return ids


@dataclass(frozen=True)
class LocalAssist(DraftAssist):
    """The draft model, its sequence state at the target's context, and the step it just
    rejected there (proposed first by the target's speculative step)."""

    lm: LocalCausalLM
    state: SeqState
    rejected: list[int]


class LocalDraft:
    """A local Hugging Face draft: samples candidates, and scores with its own forward pass."""

    def __init__(self, lm: LocalCausalLM) -> None:
        self.lm = lm
        self.name = lm.name

    @property
    def local_model(self) -> LocalCausalLM:
        return self.lm

    @property
    def supports_grounding(self) -> bool:
        return self.lm.supports_grounding

    def start(
        self,
        prompt: str,
        signals: SignalSettings,
        *,
        add_special_tokens: bool = True,
        prefix_cache: int = 0,
        deadline: float | None = None,  # a local model has nothing to wait for before a step
    ) -> LocalDraftSession:
        ids = _start_ids(self.lm, prompt, add_special_tokens)
        return LocalDraftSession(self.lm, ids, signals, prefix_cache=prefix_cache)


@dataclass
class _Tentative:
    """A scored step appended to the draft's state until accept() or reject()."""

    base: int  # ids before the step
    logits: torch.Tensor  # (V,) next logits before the step
    hidden: torch.Tensor | None  # (d,) last hidden state before the step
    committed_mass: list[torch.Tensor]  # rollout mass of the step's positions as context
    grammar: Matcher | None  # under a constraint: the grammar state after the step


class LocalDraftSession:
    """Draft state of one generation. Step 3 (score) lives here because it needs the cache."""

    local = True  # its calls run here (on a runner), not on a server

    def __init__(
        self,
        lm: LocalCausalLM,
        prompt_ids: list[int],
        cfg: SignalSettings,
        *,
        prefix_cache: int = 0,
    ) -> None:
        self.lm = lm
        self.cfg = cfg
        self.device = lm.device
        self.vocab_id: str | None = lm.vocab_id
        self.use_grounding = cfg.use_grounding and lm.supports_grounding
        self.layers = min(cfg.rollout_layers, lm.num_layers)
        # from the longest prefix this model read before (with its rollout mass)
        self.state, self.cached_tokens = start_state(
            lm, prompt_ids, budget=prefix_cache, mass_key=self._mass_key()
        )
        self.prompt_tokens = len(prompt_ids)
        self._tentative: _Tentative | None = None
        # the step last rejected at this context (cleared once the context moves on): the
        # target's speculative fallback proposes it first
        self.rejected: list[int] = []
        self.grammar: Matcher | None = None  # under a constraint: the grammar state so far
        if self.state.pending:
            self._feed_committed()

    def _mass_key(self) -> tuple[object, ...] | None:
        """What the rollout mass of committed positions depends on (None: not read)."""
        if not self.use_grounding:
            return None
        c = self.cfg
        return (
            self.layers,
            c.attention_cut,
            c.rollout_residual,
            c.rollout_renormalize,
            c.exclude_sink_positions,
            c.attention_heads,
            c.grounding_target,
        )

    def finish(self) -> None:
        """Offer what this generation read (prompt and committed steps, their mass) to the
        model's prefix cache; nothing while a step is pending. The mass of positions past the
        prompt counts them as context, which holds for a later prompt unless only the prompt is
        (``grounding_target="prompt"``)."""
        if self._tentative is not None:
            return
        prompt_only = self.cfg.grounding_target == "prompt"
        key = self._mass_key() if self.state.mass is not None else None
        valid = self.prompt_tokens if prompt_only else None
        keep_state(self.lm, self.state, mass_key=key, mass_valid=valid)

    @property
    def tokens_left(self) -> int:
        return self.lm.context_window - len(self.state.ids) - 1  # a margin of 1 for EOS

    def shares_vocab_with(self, target: TargetSession) -> bool:
        return target.vocab_id is not None and target.vocab_id == self.vocab_id

    def assist(self) -> LocalAssist:
        return LocalAssist(self.lm, self.state, self.rejected)

    def _feed(self, keep: int = 1, on_rows: OnRows | None = None) -> FeedOut:
        """Feed pending ids, with the rollout layers' attention when grounding is read; a model
        that gives no attention switches this generation to confidence-only."""
        try:
            layers = self._layers()
            return self.lm.feed(
                self.state, rollout_layers=layers, hidden=True, keep=keep, on_rows=on_rows
            )
        except AttentionUnavailable:
            self.use_grounding = False
            self._drop_mass()
            return self.lm.feed(self.state, hidden=True, keep=keep)

    def _drop_mass(self) -> None:
        """Confidence-only from here: the mass of positions fed so far is of no use."""
        self.state.mass = None

    def _feed_committed(self) -> None:
        """Feed pending context ids; with grounding, extend the cached rollout mass vectors
        chunk by chunk as the feed goes (each chunk's rows are dropped once folded in)."""
        self._feed(on_rows=lambda rows, pos: self.lm.call(self._extend_committed, rows, pos))

    def _extend_committed(self, chunk: list[torch.Tensor], pos: int) -> None:
        """The rollout mass of one fed chunk of context positions from its attention rows."""
        rows = [self._process(a, pos + a.shape[-2]) for a in chunk]
        n = rows[0].shape[0]
        ctx = self._context_indicator(pos, n, committed=True, device=rows[-1].device)
        self._extend_mass(signals.propagate_mass(rows, self._prev_mass(pos), ctx))

    def _layers(self) -> int:
        return self.layers if self.use_grounding else 0

    def _process(self, attn: torch.Tensor, total: int) -> torch.Tensor:
        """`A_l` rows over all `total` positions: a sliding-window layer attends to the last
        positions only, and the rest of its row is zero."""
        import torch

        if attn.shape[-1] < total:
            attn = torch.nn.functional.pad(attn, (total - attn.shape[-1], 0))  # (H, Tq, total)
        return signals.process_attention(
            attn,
            cut=self.cfg.attention_cut,
            renormalize=self.cfg.rollout_renormalize,
            residual=self.cfg.rollout_residual,
            heads=self.cfg.attention_heads,
        )

    def _context_indicator(
        self, start: int, n: int, *, committed: bool, device: Any
    ) -> torch.Tensor:
        """m_0 of positions start..start+n: 1 for context, 0 for the step and excluded sinks;
        made on `device`, where the attention rows it meets are (a draft split by a device map
        has its last layers, hence its rows, elsewhere than its embedding)."""
        import torch

        ctx = torch.full((n,), 1.0 if committed else 0.0, device=device)
        sinks = self.cfg.exclude_sink_positions
        if committed and start < sinks:
            ctx[: min(n, sinks - start)] = 0.0
        if committed and self.cfg.grounding_target == "prompt":  # accepted steps do not count
            ctx[max(0, self.prompt_tokens - start) :] = 0.0
        return ctx

    def _prev_mass(self, upto: int) -> list[torch.Tensor]:
        import torch

        if self.state.mass is None:  # nothing fed yet: empty vectors (moved where rows are)
            return [torch.zeros(0, device=self.lm.device)] * (self.layers + 1)
        return [m[:upto] for m in self.state.mass]

    def _extend_mass(self, new: list[torch.Tensor]) -> None:
        import torch

        if self.state.mass is None:
            self.state.mass = new
        else:
            self.state.mass = [torch.cat([m, n]) for m, n in zip(self.state.mass, new, strict=True)]

    # 1. propose
    def propose(self, settings: DecodeSettings, generator: Rng) -> list[Candidate]:
        self.grammar = _grammar(
            self.lm, self.grammar, settings, self.state.ids[self.prompt_tokens :]
        )
        return sample_steps(self.lm, self.state, settings, generator, grammar=self.grammar)

    # 2. select
    def select(self, candidates: list[Candidate]) -> int:
        if self.cfg.selector == "attention" and len(candidates) > 1 and self.lm.supports_grounding:
            return select(self._attention_embeddings(candidates))
        return self.lm.call(_medoid, candidates)

    def _attention_embeddings(self, candidates: list[Candidate]) -> torch.Tensor:
        """`(k, ctx)`: each candidate's last-layer attention over the context, averaged over
        heads and its tokens (one forward of the k candidates, right-padded: causal rows never
        see the padding)."""
        import torch

        rows = [c.scored_ids or [0] for c in candidates]
        width = max(len(r) for r in rows)
        fill = self.lm.pad_id
        ids = torch.tensor([r + [fill] * (width - len(r)) for r in rows], device=self.lm.device)
        cache = self.lm.repeat_cache(self.state.cache, len(rows))
        _, (attn,) = self.lm.attend(ids, cache, 1)  # (k, H, T, ctx + T)
        ctx = self.state.fed
        return torch.stack(
            [attn[i, :, : len(r), :ctx].float().mean(dim=(0, 1)) for i, r in enumerate(rows)]
        )  # (k, ctx)

    # 3. score
    def score(self, candidate: Candidate) -> StepSignals:
        """Append the step tentatively and read both signals from one forward pass.

        ``l = min_t log p(s_t)`` from the logits; ``g = min_t G(t)`` from the rollout of the
        step's attention rows with the step itself not counted as context.
        """

        if self._tentative is not None:
            raise StateError("score() called twice without accept() or reject()")
        tokens = candidate.scored_ids
        if not tokens:
            raise InvalidInputError("cannot score an empty step")
        base = len(self.state.ids)
        before_logits, before_hidden = self.state.next_logits, self.state.next_hidden
        assert before_logits is not None
        self.state.ids.extend(tokens)
        try:
            out = self._feed(keep=len(tokens))
        except BaseException:
            del self.state.ids[base:]
            raise
        logprobs, g, committed = self.lm.call(self._signals, before_logits, out, base, tokens)
        grammar = candidate.grammar if isinstance(candidate.grammar, Matcher) else None
        self._tentative = _Tentative(base, before_logits, before_hidden, committed, grammar)
        conf = signals.confidence(logprobs, self.cfg.confidence_aggregate)
        return StepSignals(confidence=conf, grounding=g)

    def _signals(
        self, before: torch.Tensor, out: FeedOut, base: int, tokens: list[int]
    ) -> tuple[torch.Tensor, float | None, list[torch.Tensor]]:
        """Token log-probs `(T,)`, g, and the step's mass as committed context."""
        import torch

        # logits predicting token t: the context's last logits, then the step's own positions
        pred = torch.cat([before.unsqueeze(0), out.logits[:-1]])  # (T, V)
        logprobs = signals.token_logprobs(pred, torch.tensor(tokens, device=pred.device))
        return (logprobs, *self._grounding(out, base, tokens))

    def _grounding(
        self, out: FeedOut, base: int, tokens: list[int]
    ) -> tuple[float | None, list[torch.Tensor]]:
        """g of the step just fed, and its positions' mass as committed context."""
        import torch

        if out.rows is None:
            return None, []
        n = len(tokens)
        rows = [self._process(a, base + n) for a in out.rows[0]]  # (T, base + T) each
        prev, where = self._prev_mass(base), rows[-1].device
        step_ctx = self._context_indicator(base, n, committed=False, device=where)
        step = signals.propagate_mass(rows, prev, step_ctx)
        committed_ctx = self._context_indicator(base, n, committed=True, device=where)
        committed = signals.propagate_mass(rows, prev, committed_ctx)
        content = None
        if self.cfg.grounding_aggregate == "content_min":
            pieces = [self.lm.decode([t]) for t in tokens]
            content = torch.tensor(signals.content_tokens(pieces), device=step[-1].device)
        how, q = self.cfg.grounding_aggregate, self.cfg.grounding_quantile
        return signals.grounding(step, how, q=q, content=content), committed

    def accept(self) -> None:
        if self._tentative is None:
            raise StateError("accept() without a scored step")
        if self._tentative.committed_mass:
            self._extend_mass(self._tentative.committed_mass)
        if self._tentative.grammar is not None:
            self.grammar = self._tentative.grammar
        self._tentative = None
        self.rejected = []

    def reject(self) -> None:
        """Crop the rejected step from the draft cache; the context is as before `score`."""
        t = self._tentative
        if t is None:
            raise StateError("reject() without a scored step")
        self.rejected = self.state.ids[t.base :]
        self.lm.rollback(self.state, t.base)
        self.state.fed = t.base
        self.state.next_logits, self.state.next_hidden = t.logits, t.hidden
        self._tentative = None

    # 5. the target wrote the step
    def append(self, text: str, ids: list[int] | None) -> None:
        if self._tentative is not None:
            raise StateError("append() while a scored step is pending")
        self.rejected = []
        new = ids if ids is not None else self.lm.encode_continuation(text)
        if not new:
            return
        if self.grammar is not None:  # the target's step, valid text under the constraint
            self.grammar.follow(new)
        base = len(self.state.ids)
        self.state.ids.extend(new)
        try:
            self._feed_committed()
        except BaseException:
            self.lm.rollback(self.state, base)
            raise

"""The local Hugging Face target: it writes fallback steps, catching up on accepted text lazily,
and verifies a draft step with that same catch-up prefill (the target-verified judge)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...engine import signals
from ...engine.backends import DecodeSettings, DraftAssist
from ...engine.candidate import Candidate
from ...errors import StateError
from .grammar import Matcher
from .model import LocalCausalLM
from .prefix_cache import keep_state, start_state
from .sampling import sample_steps
from .sessions import LocalAssist, _grammar, _medoid, _start_ids
from .speculative import speculative_step

if TYPE_CHECKING:
    import torch

    from ...engine.backends import Rng

_log = logging.getLogger(__name__)
# unread committed tokens worth reading when a generation ends (`LocalTargetSession.finish`):
# a long history (an agent's system prompt and tools) the next turn would otherwise read at once
READ_AT_END = 1024


@dataclass
class _Verified:
    """A step the target fed to verify it, until accept() or reject()."""

    base: int  # ids before the step
    first: torch.Tensor | None  # (V,) logits predicting the step's first token (None: empty)
    hidden: torch.Tensor | None  # (d,) the last hidden state before the step
    ids: list[int]  # the step's text tokens


def _stack(before: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.cat([before.unsqueeze(0), rows])


def _logprobs(preds: torch.Tensor, ids: list[int], ends: list[int]) -> list[float]:
    """log p of each token; with `ends` (the step ended the text) the last position is the
    probability of ending there by any of the model's end tokens (``<|im_end|>`` and
    ``<|endoftext|>`` alike), ``log sum_e p(e)``."""
    import torch

    out = signals.token_logprobs(preds, torch.tensor(ids, device=preds.device)).tolist()
    if ends:
        logp = torch.log_softmax(preds[-1].float(), dim=-1)
        out[-1] = float(torch.logsumexp(logp[ends], dim=0))
    return out


class LocalTarget:
    """A local Hugging Face target: writes fallback steps, catching up on accepted text lazily."""

    def __init__(self, lm: LocalCausalLM) -> None:
        self.lm = lm
        self.name = lm.name

    @property
    def local_model(self) -> LocalCausalLM:
        return self.lm

    def verify_refusal(self) -> None:
        return None  # the catch-up prefill gives the step's log-probabilities

    def start(
        self,
        prompt: str,
        *,
        add_special_tokens: bool = True,
        prefix_cache: int = 0,
        deadline: float | None = None,  # nothing to wait for before a step
    ) -> LocalTargetSession:
        ids = _start_ids(self.lm, prompt, add_special_tokens)
        return LocalTargetSession(self.lm, ids, prefix_cache=prefix_cache)


class LocalTargetSession:
    local = True

    def __init__(self, lm: LocalCausalLM, prompt_ids: list[int], *, prefix_cache: int = 0) -> None:
        self.lm = lm
        self.device = lm.device
        self.vocab_id: str | None = lm.vocab_id
        # the prompt is not fed until the target is first needed: a run whose every step the
        # draft writes never runs the target at all; what a prefix cache holds of it is not
        # fed again
        self.state, self.cached_tokens = start_state(lm, prompt_ids, budget=prefix_cache)
        self.prompt_tokens = len(prompt_ids)
        self.grammar: Matcher | None = None  # under a constraint: the grammar state so far
        self._verified: _Verified | None = None

    @property
    def tokens_left(self) -> int:
        return self.lm.context_window - len(self.state.ids) - 1

    def finish(self, *, read: bool = False) -> None:
        """Offer what this generation fed to the model's prefix cache (nothing while a verified
        step is pending). With `read`, first feed what was committed and not yet fed (accepted
        draft steps; the whole prompt where the draft wrote every step) in one prefill when it
        is `READ_AT_END` tokens or more: the history a later turn would otherwise read at once,
        in the turn whose draft read it too. A shorter tail is read when a step needs it, at
        about the same cost."""
        if self._verified is not None:
            return
        if read and self.state.pending >= READ_AT_END and self.lm.prefix_cache.capacity > 0:
            try:
                self.lm.feed(self.state, keep=1)
            except Exception:  # all or nothing: the answer stands, what was read is kept
                _log.debug("reading the committed text for the prefix cache failed", exc_info=True)
        keep_state(self.lm, self.state)

    def append(self, text: str, ids: list[int] | None) -> None:
        new = ids if ids is not None else self.lm.encode_continuation(text)
        self.state.ids.extend(new)
        if self.grammar is not None:  # the accepted draft step, valid under the constraint
            self.grammar.follow(new)

    # 4. the target-verified judge: the catch-up prefill, tentatively
    def verify(
        self, text: str, ids: list[int] | None, deadline: float | None, *, eos: bool = False
    ) -> list[float]:
        """Feed the pending context and the step in one forward (the catch-up prefill the
        target owes the step anyway) and read ``log p(s_t | ctx, s_<t)`` of each step token."""
        if self._verified is not None:
            raise StateError("verify() called twice without accept() or reject()")
        if ids is not None:  # the draft's tokens (its EOS last when `eos`)
            new, text_ids = list(ids), list(ids[:-1] if eos else ids)
        else:
            text_ids = self.lm.encode_continuation(text)
            new = text_ids + ([min(self.lm.eos_ids)] if eos and self.lm.eos_ids else [])
        if not new:  # nothing the target can score: accept and reject change nothing
            self._verified = _Verified(len(self.state.ids), None, None, [])
            return []
        base = len(self.state.ids)
        if self.state.fed == base and self.state.next_logits is None:  # re-feed the last id
            self.lm.crop(self.state.cache, base - 1)
            self.state.fed = base - 1
        start = self.state.fed
        before = (self.state.next_logits, self.state.next_hidden) if start == base else None
        self.state.ids.extend(new)
        try:  # the logits from the last context position on: the step's predictions
            out = self.lm.feed(self.state, hidden=True, keep=len(new) + (start < base))
        except BaseException:
            del self.state.ids[base:]
            raise
        # the logits predicting the step's tokens: from position base - 1 to the end but one
        if before is None:
            preds = out.logits[:-1]
            assert out.hidden is not None
            first = _Verified(base, preds[0], out.hidden[0], text_ids)
        else:
            assert before[0] is not None
            preds = self.lm.call(_stack, before[0], out.logits[:-1])
            first = _Verified(base, before[0], before[1], text_ids)
        self._verified = first
        ends = sorted(self.lm.eos_ids) if eos else []
        return self.lm.call(_logprobs, preds, new, ends)

    def accept(self) -> None:
        """Keep the verified step: it is in the cache already."""
        v = self._verified
        if v is None:
            raise StateError("accept() without a verified step")
        if self.grammar is not None:
            self.grammar.follow(v.ids)
        self._verified = None

    def reject(self) -> None:
        """Drop the verified step: the cache is cropped to the context, and the prefill's logits
        there give the first token of the target's own step."""
        v = self._verified
        if v is None:
            raise StateError("reject() without a verified step")
        self._verified = None
        if v.first is None:  # an empty step: nothing was fed
            return
        self.lm.rollback(self.state, v.base)
        self.state.fed = v.base
        self.state.next_logits, self.state.next_hidden = v.first, v.hidden
        self._verified = None

    def write_step(
        self, settings: DecodeSettings, generator: Rng, assist: DraftAssist | None = None
    ) -> Candidate:
        greedy = settings.k == 1 and settings.temperature == 0.0
        self.grammar = _grammar(
            self.lm, self.grammar, settings, self.state.ids[self.prompt_tokens :]
        )
        speculate = settings.target_speculation > 0 and self.grammar is None
        if isinstance(assist, LocalAssist) and speculate and greedy:
            first = assist.rejected or None
            return speculative_step(self.lm, self.state, assist.lm, assist.state, settings, first)
        if self.state.pending:
            self.lm.feed(self.state, hidden=settings.k > 1)  # one batched catch-up prefill
        cands = sample_steps(
            self.lm,
            self.state,
            settings,
            generator,
            keep_cache=settings.k == 1,
            grammar=self.grammar,
        )
        best = cands[_medoid(cands)]
        if isinstance(best.grammar, Matcher):
            self.grammar = best.grammar
        base = len(self.state.ids)
        self.state.ids.extend(best.ids)
        self.state.fed = base + best.fed
        if best.fed:
            self.state.next_logits = self.state.next_hidden = None
        return best

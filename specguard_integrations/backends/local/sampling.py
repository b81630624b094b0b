"""Sampling on a local model: the next token (greedy or nucleus), where a step in token ids
ends, and step 1 itself: k candidate steps from one prefix.

The context is already in the KV cache (one prefill, extended step by step). For k > 1 the cache
is repeated k times along the batch and every row decodes until its own step boundary; finished
rows keep decoding padding until all are done or `max_tokens` is reached, and are masked out.
The same routine writes the target's fallback step (greedy: k = 1, temperature 0).

`sample_steps` hands the job to the model's runner (`runner.py`), if a runtime plugged one in
(it may run the job together with other generations' jobs); else it runs `sample_steps_alone`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...engine.candidate import Candidate, cut_text
from ...errors import InvalidInputError
from .state import DecodeJob

if TYPE_CHECKING:
    import torch

    from ...engine.backends import DecodeSettings
    from ...segmentation import StepSegmenter
    from ...types import StepFinish
    from .grammar import Matcher
    from .model import LocalCausalLM
    from .state import SeqState


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """`(B, V)` logits -> `(B,)` tokens; greedy when temperature is 0, else nucleus sampling."""
    import torch

    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the top token always stays)
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def cut_step(
    lm: LocalCausalLM,
    ids: list[int],
    segmenter: StepSegmenter,
    stop: tuple[str, ...],
    tail: str = "",
) -> tuple[int, str, StepFinish] | None:
    """Where the step in `ids` ends, if it has: (tokens kept, text, finish); see `cut_text`."""
    text = lm.decode(ids)
    cut = cut_text(text, segmenter, stop, tail)
    if cut is None:
        return None
    reach, kept, finish = cut
    n = _tokens_covering(lm, ids, reach)
    return n, (kept if finish == "stop" else lm.decode(ids[:n])), finish


def _tokens_covering(lm: LocalCausalLM, ids: list[int], chars: int) -> int:
    """The fewest leading tokens whose text reaches `chars` characters."""
    if chars <= 0:
        return 0
    for n in range(1, len(ids) + 1):
        if len(lm.decode(ids[:n])) >= chars:
            return n
    return len(ids)


# step ends that end the generation: under a grammar, only once its text is complete
_ENDS = ("final_answer", "tool_call", "stop")


class Rows:
    """The k candidate steps being sampled: tokens per row, which rows ended, hidden states,
    and under a constraint each row's own grammar state."""

    def __init__(
        self,
        lm: LocalCausalLM,
        k: int,
        cut: Callable[[list[int]], tuple[int, str, StepFinish] | None],
        first_hidden: torch.Tensor | None,
        grammar: Matcher | None = None,
    ) -> None:
        self.lm, self.cut = lm, cut
        self.grammars = None if grammar is None else [grammar.fork() for _ in range(k)]
        self.toks: list[list[int]] = [[] for _ in range(k)]
        self.ended: list[Candidate | None] = [None] * k
        self.hidden: list[list[torch.Tensor]] | None = (
            None if first_hidden is None else [[first_hidden] for _ in range(k)]
        )

    @property
    def done(self) -> bool:
        return all(r is not None for r in self.ended)

    def constrain(self, logits: torch.Tensor) -> torch.Tensor:
        """`(k, V)` logits with what each open row's grammar forbids masked (a copy, masked on
        the logits' device in one pass); as they are without a constraint."""
        if self.grammars is None:
            return logits
        from .grammar import mask_rows

        open_rows = [
            g if end is None else None for g, end in zip(self.grammars, self.ended, strict=True)
        ]
        return mask_rows(logits.clone(), open_rows)

    def take(self, nxt: torch.Tensor) -> None:
        """Append each open row's sampled token `(k,)`; close rows at EOS, a step end, or a
        grammar that is complete (the text ends there, as at EOS)."""
        tokens = nxt.tolist()  # the one read of the sampled tokens
        for i, (row, end) in enumerate(zip(self.toks, self.ended, strict=True)):
            if end is not None:
                continue
            tok = int(tokens[i])
            if tok in self.lm.eos_ids:
                self.ended[i] = Candidate(row, self.lm.decode(row), "eos", eos_id=tok)
                continue
            grammar = self.grammars[i] if self.grammars is not None else None
            if grammar is not None:
                grammar.take(tok)
            row.append(tok)
            cut = self.cut(row)
            if cut is not None and grammar is not None and cut[2] in _ENDS:
                at_cut = grammar.fork()
                at_cut.back(len(row) - cut[0])
                if not at_cut.accepting:
                    cut = None  # an end marker inside text the grammar had not finished there
            if cut is not None:
                n, text, finish = cut
                if grammar is not None:
                    grammar.back(len(row) - n)  # tokens past the cut are not the step's
                self.ended[i] = Candidate(row[:n], text, finish)
            elif grammar is not None and grammar.done:
                self.ended[i] = Candidate(row.copy(), self.lm.decode(row), "eos")

    def last_tokens(self) -> list[int]:
        """The token each row feeds next (ended rows feed EOS as padding; they are ignored)."""
        fill = self.lm.pad_id
        return [
            t[-1] if r is None and t else fill for t, r in zip(self.toks, self.ended, strict=True)
        ]

    def add_hidden(self, h: torch.Tensor | None) -> None:
        """`(k, d)` hidden states of the tokens just fed, kept for rows still open."""
        if h is None or self.hidden is None:
            return
        for i, end in enumerate(self.ended):
            if end is None:
                self.hidden[i].append(h[i])

    def candidates(self) -> list[Candidate]:
        """Every row as a candidate (rows still open were cut at max_tokens), with its mean
        hidden state over the scored tokens when hidden states were kept."""
        import torch

        out = []
        for i, row in enumerate(self.toks):
            cand = self.ended[i] or Candidate(row, self.lm.decode(row), "max_step_tokens")
            if self.grammars is not None:
                cand.grammar = self.grammars[i]
            if self.hidden is not None:
                n = max(1, len(cand.scored_ids))
                cand.embedding = torch.stack(self.hidden[i][:n]).mean(dim=0)  # (d,)
            out.append(cand)
        return out


def sample_steps(
    lm: LocalCausalLM,
    state: SeqState,
    settings: DecodeSettings,
    generator: torch.Generator | None = None,
    *,
    keep_cache: bool = False,
    grammar: Matcher | None = None,
) -> list[Candidate]:
    """Sample `settings.k` candidate steps continuing `state` (whose ids must all be fed), each
    with its mean hidden state when k > 1 (for selection). Under a `grammar` every row samples
    under its own copy of it (on the model's own path: masked rows are not grouped) and each
    candidate carries its state after the step (`Candidate.grammar`).

    The state's cache is left as it was, except with ``keep_cache`` and k = 1, where the kept
    step tokens that were fed stay cached (`Candidate.fed`) so a greedy target does not
    recompute them.
    """
    if state.pending or state.next_logits is None:
        raise InvalidInputError("sample_steps needs a state whose ids are all fed")
    if settings.k > 1 and state.next_hidden is None:
        raise InvalidInputError("embedding candidates needs the last hidden state of the context")
    if lm.runner is None or grammar is not None:
        return sample_steps_alone(
            lm, state, settings, generator, keep_cache=keep_cache, grammar=grammar
        )
    return lm.runner.decode(DecodeJob(state, settings, generator, keep_cache))


def sample_steps_alone(
    lm: LocalCausalLM,
    state: SeqState,
    settings: DecodeSettings,
    generator: torch.Generator | None = None,
    *,
    keep_cache: bool = False,
    grammar: Matcher | None = None,
) -> list[Candidate]:
    """`sample_steps` on the model's own path, with no other job in its forwards."""

    k, max_tokens, want_hidden = settings.k, settings.max_tokens, settings.k > 1
    assert state.next_logits is not None
    base = state.fed
    cache = state.cache if k == 1 else lm.repeat_cache(state.cache, k)
    logits = state.next_logits.unsqueeze(0).expand(k, -1)  # (k, V)
    rows = Rows(
        lm,
        k,
        lambda ids: cut_step(lm, ids, settings.segmenter, settings.stop, settings.stop_tail),
        state.next_hidden if want_hidden else None,
        grammar,
    )
    fed_rows = 0  # tokens fed per row so far
    try:
        for t in range(max_tokens):
            allowed = rows.constrain(logits)  # (k, V)
            rows.take(sample_next(allowed, settings.temperature, settings.top_p, generator))
            if t == max_tokens - 1 or rows.done:
                break
            logits, h = lm.step_batch(rows.last_tokens(), cache, hidden=want_hidden, alone=True)
            fed_rows += 1
            rows.add_hidden(h)
    except BaseException:
        if k == 1:
            lm.crop(cache, base)
        raise
    out = rows.candidates()
    if k == 1:
        # keep_cache: at most all but the last kept token stay cached, so the next feed yields
        # fresh logits; otherwise the cache goes back to the context
        out[0].fed = max(0, min(fed_rows, len(out[0].ids) - 1)) if keep_cache else 0
        lm.crop(cache, base + out[0].fed)
    return out

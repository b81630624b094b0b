"""Step 1 of the loop: sample k candidate steps in one batch from one shared prefix.

The context is already in the KV cache (one prefill, extended step by step). For k > 1 the cache
is repeated k times along the batch and every row decodes until its own step boundary; finished
rows keep decoding padding until all are done or `max_tokens` is reached, and are masked out.
The same routine writes the target's fallback step (greedy: k = 1, temperature 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..segmentation import StepSegmenter

if TYPE_CHECKING:
    import torch

    from ..types import StepFinish
    from .backends import DecodeSettings
    from .lm import LocalCausalLM, SeqState


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

    def __post_init__(self) -> None:
        if self.num_tokens < 0:
            self.num_tokens = len(self.ids)

    @property
    def scored_ids(self) -> list[int]:
        """Tokens the draft is judged on: the step, plus EOS when it chose to stop."""
        return self.ids + ([self.eos_id] if self.eos_id is not None else [])


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


class _Rows:
    """The k candidate steps being sampled: tokens per row, which rows ended, hidden states."""

    def __init__(
        self,
        lm: LocalCausalLM,
        k: int,
        cut: Callable[[list[int]], tuple[int, str, StepFinish] | None],
        first_hidden: torch.Tensor | None,
    ) -> None:
        self.lm, self.cut = lm, cut
        self.toks: list[list[int]] = [[] for _ in range(k)]
        self.ended: list[Candidate | None] = [None] * k
        self.hidden: list[list[torch.Tensor]] | None = (
            None if first_hidden is None else [[first_hidden] for _ in range(k)]
        )

    @property
    def done(self) -> bool:
        return all(r is not None for r in self.ended)

    def take(self, nxt: torch.Tensor) -> None:
        """Append each open row's sampled token `(k,)`; close rows at EOS or a step end."""
        for i, (row, end) in enumerate(zip(self.toks, self.ended, strict=True)):
            if end is not None:
                continue
            tok = int(nxt[i])
            if tok in self.lm.eos_ids:
                self.ended[i] = Candidate(row, self.lm.decode(row), "eos", eos_id=tok)
                continue
            row.append(tok)
            cut = self.cut(row)
            if cut is not None:
                n, text, finish = cut
                self.ended[i] = Candidate(row[:n], text, finish)

    def last_tokens(self) -> list[int]:
        """The token each row feeds next (ended rows feed EOS as padding; they are ignored)."""
        fill = min(self.lm.eos_ids) if self.lm.eos_ids else 0
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
) -> list[Candidate]:
    """Sample `settings.k` candidate steps continuing `state` (whose ids must all be fed), each
    with its mean hidden state when k > 1 (for selection).

    The state's cache is left as it was, except with ``keep_cache`` and k = 1, where the kept
    step tokens that were fed stay cached (`Candidate.fed`) so a greedy target does not
    recompute them.
    """
    import torch

    k, max_tokens = settings.k, settings.max_tokens
    if state.pending or state.next_logits is None:
        raise ValueError("sample_steps needs a state whose ids are all fed")
    want_hidden = k > 1
    if want_hidden and state.next_hidden is None:
        raise ValueError("embedding candidates needs the last hidden state of the context")
    if lm._groupable(state.cache):  # rows share the prefix in place, with other requests'
        from .grouped import DecodeJob

        return list(lm.batcher.decode(DecodeJob(state, settings, generator, keep_cache)))
    base = state.fed
    cache = state.cache if k == 1 else lm.repeat_cache(state.cache, k)
    logits = state.next_logits.unsqueeze(0).expand(k, -1)  # (k, V)
    rows = _Rows(
        lm,
        k,
        lambda ids: cut_step(lm, ids, settings.segmenter, settings.stop, settings.stop_tail),
        state.next_hidden if want_hidden else None,
    )
    fed_rows = 0  # tokens fed per row so far
    try:
        for t in range(max_tokens):
            rows.take(sample_next(logits, settings.temperature, settings.top_p, generator))  # (k,)
            if t == max_tokens - 1 or rows.done:
                break
            feed = torch.tensor(rows.last_tokens(), device=lm.device)  # (k,)
            logits, h = lm.step_batch(feed, cache, hidden=want_hidden)
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


def speculative_step(
    target: LocalCausalLM,
    tstate: SeqState,
    draft: LocalCausalLM,
    dstate: SeqState,
    settings: DecodeSettings,
    first: list[int] | None = None,
) -> Candidate:
    """The target's greedy fallback step, written with token-level speculative decoding.

    Each round the draft proposes up to `settings.target_speculation` tokens (Leviathan et al.'s
    gamma)
    greedily from its own cache; the target scores all of them in one forward and keeps the
    longest prefix that matches its own argmax, plus its own next token (the greedy case). The
    output is the target's greedy step token for token; only the number of target forwards
    changes.

    `first`: tokens the draft already wrote from this context (the step just rejected, EOS
    included). The first round proposes all of them at once instead of asking the draft again:
    a rejected step is often right up to a late token, and the target then keeps that prefix
    after one forward.

    `tstate` may have pending ids (accepted draft text): they go into the first forward.
    `dstate` must be fully fed; its cache is returned to that point afterwards (the step loop
    appends the committed step to the draft itself).
    """
    max_tokens, cut = settings.max_tokens, (settings.segmenter, settings.stop, settings.stop_tail)
    if dstate.pending or dstate.next_logits is None:
        raise ValueError("speculative_step needs a draft state whose ids are all fed")
    if not tstate.pending and tstate.next_logits is None:
        raise ValueError("the target state has neither pending ids nor next logits")
    d_base = dstate.fed
    d_saved = (dstate.next_logits, dstate.next_hidden)
    t_base = len(tstate.ids)
    ctx_pending = tstate.ids[tstate.fed :]
    toks: list[int] = []  # step tokens so far (target's greedy choices)
    t_cached = 0  # step tokens in the target's cache (beyond the context)
    result: Candidate | None = None
    d_logits = dstate.next_logits  # (V,) draft prediction after the last step token
    try:
        while result is None and len(toks) < max_tokens:
            # 1. the draft proposes; in the first round, its rejected step if given
            if first and not toks:
                prop = list(first[:max_tokens])
            else:
                g = min(settings.target_speculation, max_tokens - len(toks))
                prop = _draft_greedy(draft, dstate, d_logits, g)
            # 2. the target scores what it has not seen + the proposal in one forward
            unfed = (ctx_pending if not toks else []) + toks[t_cached:]
            n, own = _target_check(target, tstate, unfed, prop)
            before = len(toks)
            # the target keeps the matched proposal cached; its own token is fed next round
            t_cached = before + n
            target.crop(tstate.cache, t_base + t_cached)
            # 3. the step ends at EOS, a boundary, a stop string or max_tokens (token by token)
            result = _extend(target, toks, [*prop[:n], own], max_tokens, *cut)
            if result is None and len(toks) < max_tokens:
                # 4. the draft keeps its matched proposal and reads the target's own token
                draft.crop(dstate.cache, d_base + before + min(n, len(prop) - 1))
                d_logits = _draft_read(
                    draft, dstate, toks[dstate.cache.get_seq_length() - d_base :]
                )
    except BaseException:
        target.crop(tstate.cache, tstate.fed)
        raise
    finally:
        draft.crop(dstate.cache, d_base)
        dstate.fed = d_base
        dstate.next_logits, dstate.next_hidden = d_saved
    result = result or Candidate(toks, target.decode(toks), "max_step_tokens")
    _keep_step(target, tstate, result, t_base + t_cached)
    return result


def _keep_step(lm: LocalCausalLM, state: SeqState, step: Candidate, cached: int) -> None:
    """Append the step's ids; keep the cache over them but the last (of the `cached` length at
    most), so the next feed yields fresh logits."""
    state.ids.extend(step.ids)
    keep = min(cached, len(state.ids) - 1)
    lm.crop(state.cache, keep)
    state.fed = keep
    state.next_logits = state.next_hidden = None


def _draft_greedy(
    draft: LocalCausalLM, dstate: SeqState, logits: torch.Tensor, g: int
) -> list[int]:
    """Up to g greedy draft tokens from `logits` `(V,)`; the cache grows by len(result) - 1."""
    import torch

    prop: list[int] = []
    row = logits.unsqueeze(0)  # (1, V)
    for j in range(g):
        tok = int(row[0].argmax())
        prop.append(tok)
        if tok in draft.eos_ids or j == g - 1:
            break
        row, _ = draft.step_batch(
            torch.tensor([tok], device=draft.device), dstate.cache, hidden=False
        )
    return prop


def _draft_read(draft: LocalCausalLM, dstate: SeqState, ids: list[int]) -> torch.Tensor:
    """Feed `ids` into the draft's cache; its logits `(V,)` after the last."""
    import torch

    with torch.inference_mode():
        out = draft.forward(torch.tensor([ids], device=draft.device), dstate.cache, 0, False)
    return out.logits[-1]


def _target_check(
    target: LocalCausalLM, tstate: SeqState, unfed: list[int], prop: list[int]
) -> tuple[int, int]:
    """One target forward over `unfed + prop`: how many proposed tokens match the target's
    greedy choice (n), and the target's own token after them."""
    import torch

    with torch.inference_mode():
        out = target.forward(
            torch.tensor([unfed + prop], device=target.device), tstate.cache, 0, False
        )
    if unfed:
        preds = out.logits[len(unfed) - 1 :]  # (len(prop) + 1, V)
    else:
        assert tstate.next_logits is not None
        preds = torch.cat([tstate.next_logits.unsqueeze(0), out.logits])
    choice = preds.argmax(dim=-1).tolist()  # the target's greedy token per position
    n = 0
    while n < len(prop) and choice[n] == prop[n] and prop[n] not in target.eos_ids:
        n += 1
    return n, int(choice[n])


def _extend(
    lm: LocalCausalLM,
    toks: list[int],
    new: list[int],
    max_tokens: int,
    segmenter: StepSegmenter,
    stop: tuple[str, ...],
    stop_tail: str,
) -> Candidate | None:
    """Append `new` to the step `toks` token by token; the step if it ended (EOS, boundary,
    stop string), else None (also when max_tokens is reached: the caller closes it)."""
    for tok in new:
        if tok in lm.eos_ids:
            return Candidate(toks.copy(), lm.decode(toks), "eos", eos_id=tok)
        toks.append(tok)
        cut = cut_step(lm, toks, segmenter, stop, stop_tail)
        if cut is not None:
            k, text, finish = cut
            return Candidate(toks[:k], text, finish)
        if len(toks) >= max_tokens:
            return None
    return None

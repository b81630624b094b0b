"""Step 1 of the loop: sample k candidate steps in one batch from one shared prefix.

The context is already in the KV cache (one prefill, extended step by step). For k > 1 the cache
is repeated k times along the batch and every row decodes until its own step boundary; finished
rows keep decoding padding until all are done or `max_tokens` is reached, and are masked out.
The same routine writes the target's fallback step (greedy: k = 1, temperature 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..segmentation import StepSegmenter

if TYPE_CHECKING:
    import torch

    from ..types import StepFinish
    from .lm import LocalCausalLM, SeqState


@dataclass
class Candidate:
    """One sampled step: its kept tokens (EOS excluded), text, and why it ended."""

    ids: list[int]
    text: str
    finish: StepFinish
    eos: bool = False  # the step ended with the model's EOS (scored, not part of the text)
    eos_id: int | None = None
    embedding: torch.Tensor | None = None  # (d,) mean hidden state over the step
    fed: int = 0  # kept tokens already in the cache after sampling (k = 1 with keep_cache)
    count: int | None = None  # token count when no ids are known (a remote model's step)

    @property
    def num_tokens(self) -> int:
        """Tokens of the step in its writer's tokenizer."""
        return self.count if self.count is not None else len(self.ids)

    @property
    def scored_ids(self) -> list[int]:
        """Tokens the draft is judged on: the step, plus EOS when it chose to stop."""
        return self.ids + ([self.eos_id] if self.eos and self.eos_id is not None else [])


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


def sample_steps(
    lm: LocalCausalLM,
    state: SeqState,
    *,
    k: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    segmenter: StepSegmenter,
    stop: tuple[str, ...] = (),
    generator: torch.Generator | None = None,
    embed: bool = False,
    keep_cache: bool = False,
    stop_tail: str = "",
) -> list[Candidate]:
    """Sample k candidate steps continuing `state` (whose ids must all be fed).

    The state's cache is left as it was, except with ``keep_cache`` and k = 1, where the kept
    step tokens that were fed stay cached (`Candidate.fed`) so a greedy target does not
    recompute them.
    """
    import torch

    if state.pending or state.next_logits is None:
        raise ValueError("sample_steps needs a state whose ids are all fed")
    if embed and k > 1 and state.next_hidden is None:
        raise ValueError("embedding candidates needs the last hidden state of the context")
    base = state.fed
    cache = state.cache if k == 1 else lm.repeat_cache(state.cache, k)
    logits = state.next_logits.unsqueeze(0).expand(k, -1)  # (k, V)
    eos_fill = min(lm.eos_ids) if lm.eos_ids else 0
    toks: list[list[int]] = [[] for _ in range(k)]
    hid: list[list[torch.Tensor]] = [[] for _ in range(k)]
    result: list[Candidate | None] = [None] * k
    want_hidden = embed and k > 1
    if want_hidden:
        assert state.next_hidden is not None
        for row in hid:
            row.append(state.next_hidden)
    fed_rows = 0  # tokens fed per row so far
    try:
        for t in range(max_tokens):
            nxt = sample_next(logits, temperature, top_p, generator)  # (k,)
            for i in range(k):
                if result[i] is not None:
                    continue
                tok = int(nxt[i])
                if tok in lm.eos_ids:
                    result[i] = Candidate(toks[i], lm.decode(toks[i]), "eos", eos=True, eos_id=tok)
                    continue
                toks[i].append(tok)
                cut = cut_step(lm, toks[i], segmenter, stop, stop_tail)
                if cut is not None:
                    n, text, finish = cut
                    result[i] = Candidate(toks[i][:n], text, finish)
            if t == max_tokens - 1 or all(r is not None for r in result):
                break
            feed = torch.tensor(
                [t[-1] if r is None and t else eos_fill for t, r in zip(toks, result, strict=True)],
                device=lm.device,
            )
            logits, h = lm.step_batch(feed, cache, hidden=want_hidden)
            fed_rows += 1
            if h is not None:
                for i in range(k):
                    if result[i] is None:
                        hid[i].append(h[i])
    except BaseException:
        if k == 1:
            lm._crop(cache, base)
        raise
    if k == 1 and not keep_cache:
        lm._crop(cache, base)
    out: list[Candidate] = []
    for i in range(k):
        cand = result[i] or Candidate(toks[i], lm.decode(toks[i]), "max_step_tokens")
        if want_hidden:
            n = max(1, len(cand.scored_ids))
            cand.embedding = torch.stack(hid[i][:n]).mean(dim=0)
        out.append(cand)
    if k == 1 and keep_cache:
        # keep at most all but the last kept token cached: the next feed yields fresh logits
        cand = out[0]
        cand.fed = max(0, min(fed_rows, len(cand.ids) - 1))
        lm._crop(cache, base + cand.fed)
    return out


def speculative_step(
    target: LocalCausalLM,
    tstate: SeqState,
    draft: LocalCausalLM,
    dstate: SeqState,
    *,
    gamma: int,
    max_tokens: int,
    segmenter: StepSegmenter,
    stop: tuple[str, ...] = (),
    stop_tail: str = "",
    first: list[int] | None = None,
) -> Candidate:
    """The target's greedy fallback step, written with token-level speculative decoding.

    Each round the draft proposes up to `gamma` tokens greedily from its own cache; the target
    scores all of them in one forward and keeps the longest prefix that matches its own argmax,
    plus its own next token (Leviathan et al., greedy case). The output is the target's greedy
    step token for token; only the number of target forwards changes.

    `first`: tokens the draft already wrote from this context (the step just rejected, EOS
    included). The first round proposes all of them at once instead of asking the draft again:
    a rejected step is often right up to a late token, and the target then keeps that prefix
    after one forward.

    `tstate` may have pending ids (accepted draft text): they go into the first forward.
    `dstate` must be fully fed; its cache is returned to that point afterwards (the step loop
    appends the committed step to the draft itself).
    """
    import torch

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
            # 1. the draft proposes up to g tokens greedily (its cache grows by len(prop) - 1);
            # in the first round, its rejected step if given (its cache does not grow)
            prop: list[int] = list(first[:max_tokens]) if first and not toks else []
            g = 0 if prop else min(gamma, max_tokens - len(toks))
            logits = d_logits.unsqueeze(0)  # (1, V)
            for j in range(g):
                tok = int(logits[0].argmax())
                prop.append(tok)
                if tok in draft.eos_ids or j == g - 1:
                    break
                logits, _ = draft.step_batch(
                    torch.tensor([tok], device=draft.device), dstate.cache, hidden=False
                )
            # 2. the target scores what it has not seen + the proposal in one forward
            unfed = (ctx_pending if not toks else []) + toks[t_cached:]
            with target._lock, torch.inference_mode():
                out = target._forward(
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
            new = [*prop[:n], choice[n]]
            before = len(toks)
            # the target keeps the matched proposal cached; its own token is fed next round
            t_cached = before + n
            target._crop(tstate.cache, t_base + t_cached)
            # 3. the step ends at EOS, a boundary, a stop string or max_tokens (token by token)
            for tok in new:
                if tok in target.eos_ids:
                    result = Candidate(
                        toks.copy(), target.decode(toks), "eos", eos=True, eos_id=tok
                    )
                    break
                toks.append(tok)
                cut = cut_step(target, toks, segmenter, stop, stop_tail)
                if cut is not None:
                    k, text, finish = cut
                    result = Candidate(toks[:k], text, finish)
                    break
                if len(toks) >= max_tokens:
                    break
            if result is None and len(toks) < max_tokens:
                # 4. the draft keeps its matched proposal and reads the target's own token
                draft._crop(dstate.cache, d_base + before + min(n, len(prop) - 1))
                have = dstate.cache.get_seq_length() - d_base
                with draft._lock, torch.inference_mode():
                    d_logits = draft._forward(
                        torch.tensor([toks[have:]], device=draft.device), dstate.cache, 0, False
                    ).logits[-1]
    except BaseException:
        target._crop(tstate.cache, tstate.fed)
        raise
    finally:
        draft._crop(dstate.cache, d_base)
        dstate.fed = d_base
        dstate.next_logits, dstate.next_hidden = d_saved
    if result is None:
        result = Candidate(toks, target.decode(toks), "max_step_tokens")
    # keep the cache over the kept tokens but the last, so the next feed yields fresh logits
    tstate.ids.extend(result.ids)
    keep = min(t_base + t_cached, len(tstate.ids) - 1)
    target._crop(tstate.cache, keep)
    tstate.fed = keep
    tstate.next_logits = tstate.next_hidden = None
    return result

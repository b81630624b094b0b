"""The target's greedy fallback step written with token-level speculative decoding: the draft
proposes, the target keeps the longest prefix matching its own argmax (Leviathan et al.)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...engine.candidate import Candidate
from ...errors import InvalidInputError
from .sampling import cut_step

if TYPE_CHECKING:
    import torch

    from ...engine.backends import DecodeSettings
    from ...segmentation import StepSegmenter
    from .model import LocalCausalLM
    from .state import SeqState


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
        raise InvalidInputError("speculative_step needs a draft state whose ids are all fed")
    if not tstate.pending and tstate.next_logits is None:
        raise InvalidInputError("the target state has neither pending ids nor next logits")
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

    prop: list[int] = []
    row = logits.unsqueeze(0)  # (1, V)
    for j in range(g):
        tok = int(row[0].argmax())
        prop.append(tok)
        if tok in draft.eos_ids or j == g - 1:
            break
        row, _ = draft.step_batch([tok], dstate.cache, hidden=False)
    return prop


def _draft_read(draft: LocalCausalLM, dstate: SeqState, ids: list[int]) -> torch.Tensor:
    """Feed `ids` into the draft's cache; its logits `(V,)` after the last."""
    import torch

    with torch.inference_mode():
        out = draft.forward(ids, dstate.cache, keep=1)
    return out.logits[-1]


def _target_check(
    target: LocalCausalLM, tstate: SeqState, unfed: list[int], prop: list[int]
) -> tuple[int, int]:
    """One target forward over `unfed + prop`: how many proposed tokens match the target's
    greedy choice (n), and the target's own token after them."""
    import torch

    with torch.inference_mode():  # the logits from the last unfed position on
        out = target.forward(unfed + prop, tstate.cache, keep=len(prop) + bool(unfed))
    if unfed:
        preds = out.logits  # (len(prop) + 1, V)
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

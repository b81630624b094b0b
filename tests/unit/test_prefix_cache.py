"""The prefix cache: a later call feeds only what follows its longest cached prefix, in both
models, and changes nothing it computes: greedy text, grounding and confidence are the same with
the cache on and off (same and different tokenizers), under a byte budget that forces eviction,
for concurrent calls that share and diverge from one prefix; a stored entry is never mutated."""

from __future__ import annotations

import threading

import pytest

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.backends.local import target as local_target
from specguard_integrations.backends.local.prefix_cache import PrefixCache
from specguard_integrations.errors import GenerationTimeout
from specguard_integrations.testing import tiny_lm

SYSTEM = "System: you answer questions about numbers, one short step at a time.\n" * 4
TURNS = ["User: what is 3 + 4?\n", "User: and times 2?\n", "User: minus 5?\n"]


def _pair(draft_arch: str = "llama", device: str = "cpu"):
    from specguard_integrations.backends.local.model import LocalCausalLM

    pair = tiny_lm(draft_arch, seed=1), tiny_lm("llama", seed=2, layers=4)
    return tuple(LocalCausalLM(m.model.to(device), m.tokenizer, name=m.name) for m in pair)


# tau inside the fused range of these random pairs (0.135-0.146): draft and target steps mix
TAU = {"llama": 0.1355, "gpt2": 0.1425}


def _cfg(arch: str = "llama", **kw):
    base = dict(tau=TAU[arch], max_new_tokens=24, max_step_tokens=6, beta=0.5)
    return SpecGuardConfig.greedy(**{**base, **kw})


def _conversation(engine, cfg):
    """Three turns, each prompt the last one plus its answer and a new user turn."""
    out, prompt = [], SYSTEM
    for turn in TURNS:
        prompt += turn
        result = engine.generate(prompt, config=cfg)
        out.append(result)
        prompt += result.text + "\n"
    return out


def _same(a, b):
    assert a.text == b.text
    assert [s.source for s in a.steps] == [s.source for s in b.steps]
    for x, y in zip(a.steps, b.steps, strict=True):
        assert x.confidence == pytest.approx(y.confidence, abs=1e-5)
        if x.grounding is not None or y.grounding is not None:
            assert x.grounding == pytest.approx(y.grounding, abs=1e-5)


@pytest.mark.parametrize("draft_arch", ["llama", "gpt2"])
def test_the_same_conversation_with_the_cache_on_and_off(draft_arch, device):
    d, t = _pair(draft_arch, device)
    on = _conversation(SpecGuard(d, t), _cfg(draft_arch))
    d2, t2 = _pair(draft_arch, device)
    off = _conversation(SpecGuard(d2, t2), _cfg(draft_arch, prefix_cache_bytes=0))
    for a, b in zip(on, off, strict=True):
        _same(a, b)
    assert {s.source for r in on for s in r.steps} == {"draft", "target"}  # both models ran
    # later turns read the earlier ones from the cache, in both models
    assert on[0].draft_cached_tokens == 0 and off[1].draft_cached_tokens == 0
    for i, r in enumerate(on[1:], start=1):
        assert r.draft_cached_tokens > len(SYSTEM) // 2, r.draft_cached_tokens
        assert r.usage()["input_token_details"]["cache_read"] == r.cached_tokens
        # the target reads its prompt lazily: once an earlier turn had it write a step, that
        # turn's reading is reused
        if any(s.source == "target" for prev in on[:i] for s in prev.steps):
            assert r.cached_tokens > 0, i


def _gemma_pair():
    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.testing import char_tokenizer, tiny_family_model

    tok = char_tokenizer()
    draft = tiny_family_model("gemma3", tok, seed=1)
    target = tiny_family_model("gemma3", tok, seed=2, hidden=48, layers=3)
    return LocalCausalLM(draft, tok, name="g-d"), LocalCausalLM(target, tok, name="g-t")


def test_sliding_window_layers_are_cached_and_cropped_back_exactly():
    """Gemma 3's sliding-window layers (a 16-token window here) keep their history, so a cached
    prefix is cropped back to any length and gives what a fresh read gives."""
    cfg = SpecGuardConfig.greedy(tau=0.5, max_new_tokens=30, max_step_tokens=10)
    on = _conversation(SpecGuard(*_gemma_pair()), cfg)
    off = _conversation(SpecGuard(*_gemma_pair()), cfg.merged(prefix_cache_bytes=0))
    for a, b in zip(on, off, strict=True):
        _same(a, b)
    assert all(r.draft_cached_tokens > 16 for r in on[1:])


def test_a_sliding_layer_crops_back_past_its_window():
    d, _ = _gemma_pair()
    ids = list(range(5, 45))
    state = d.new_state(ids)
    full = d.feed(state, keep=1).logits[-1]
    d.crop(state.cache, 20)  # far past the 16-token window, twice
    d.crop(state.cache, 12)
    assert [layer.keys.shape[-2] for layer in state.cache.layers] == [12, 12]
    state.fed = 12
    again = d.feed(state, keep=1).logits[-1]
    assert float((again - full).abs().max()) < 1e-4


def test_a_tiny_budget_evicts_and_stays_exact():
    d, t = _pair()
    cfg = _cfg(prefix_cache_bytes=40_000)  # a few hundred positions of these models' KV
    on = _conversation(SpecGuard(d, t), cfg)
    assert d.prefix_cache.nbytes <= 40_000 and t.prefix_cache.nbytes <= 40_000
    d2, t2 = _pair()
    off = _conversation(SpecGuard(d2, t2), _cfg(prefix_cache_bytes=0))
    for a, b in zip(on, off, strict=True):
        _same(a, b)


def test_concurrent_calls_share_and_diverge_from_one_prefix():
    d, t = _pair()
    engine = SpecGuard(d, t)
    engine.generate(SYSTEM + TURNS[0], config=_cfg())  # warms the shared prefix
    prompts = [SYSTEM + turn for turn in TURNS] * 2
    results: dict[int, object] = {}

    def run(i: int) -> None:
        results[i] = engine.generate(prompts[i], config=_cfg())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    d2, t2 = _pair()
    alone = SpecGuard(d2, t2)
    for i, p in enumerate(prompts):
        _same(results[i], alone.generate(p, config=_cfg(prefix_cache_bytes=0)))
        assert results[i].draft_cached_tokens >= len(d.encode_prompt(SYSTEM)) - 1


def test_a_stored_entry_is_never_changed_by_a_hit():
    import torch

    d, t = _pair()
    engine = SpecGuard(d, t)
    engine.generate(SYSTEM + TURNS[0], config=_cfg())
    entries = list(d.prefix_cache._entries)
    assert entries
    before = [
        [layer.keys.clone() for layer in e.cache.layers] + [m.clone() for m in e.mass]
        for e in entries
    ]
    engine.generate(SYSTEM + TURNS[1], config=_cfg())  # hits, then writes its own steps
    for e, saved in zip(entries, before, strict=True):
        now = [layer.keys for layer in e.cache.layers] + list(e.mass)
        assert all(torch.equal(a, b) for a, b in zip(now, saved, strict=True))


def test_lookup_takes_the_longest_prefix_and_leaves_one_id_to_feed():
    lm = tiny_lm(seed=0)
    cache = PrefixCache(10**8)
    for ids in ([5, 6, 7, 8, 9, 10], [5, 6, 7, 20, 21]):
        st = lm.new_state(ids)
        lm.feed(st)
        assert cache.offer(ids, st.cache, logits=st.next_logits)
    hit = cache.lookup([5, 6, 7, 8, 9, 10, 11])
    assert hit is not None and hit.length == 6 and hit.logits is not None
    hit = cache.lookup([5, 6, 7, 8, 30])
    assert hit is not None and hit.length == 4 and hit.logits is None
    assert hit.cache.get_seq_length() == 4
    hit = cache.lookup([5, 6, 7, 8, 9])  # a prefix of an entry, all of it: the last id again
    assert hit is not None and hit.length == 4
    assert cache.lookup([99, 5, 6]) is None
    # an entry that extends another replaces it; one another covers is not kept
    st = lm.new_state([5, 6, 7, 8, 9, 10, 11, 12])
    lm.feed(st)
    assert cache.offer(st.ids, st.cache, logits=st.next_logits) and len(cache) == 2
    assert not cache.offer([5, 6, 7], lm.new_state([5, 6, 7]).cache)


def test_the_cache_is_bounded_and_least_recently_used_goes_first():
    lm = tiny_lm(seed=0)
    cache = PrefixCache(10**8)
    states = []
    for first in (10, 20, 30):
        st = lm.new_state([first, 1, 2, 3])
        lm.feed(st)
        cache.offer(st.ids, st.cache, logits=st.next_logits)
        states.append(st)
    one = cache.nbytes // 3
    cache.lookup([10, 1, 2, 3, 4])  # 10... is now the most recent
    cache.resize(2 * one)
    assert len(cache) == 2
    assert cache.lookup([20, 1, 2, 3]) is None  # the least recently used went
    assert cache.lookup([10, 1, 2, 3, 4]) is not None
    cache.resize(0)
    assert len(cache) == 0


def test_the_target_reads_what_the_draft_wrote_so_the_next_turn_hits(monkeypatch):
    """A turn whose every step the draft wrote (tau 0) never ran the target; once it ends, the
    target reads the prompt and the answer (over `READ_AT_END` tokens), so the next turn finds
    the whole history cached in both models. A generation the caller stops, one past its
    deadline, one with the cache off and one whose unread text is short read nothing more."""
    monkeypatch.setattr(local_target, "READ_AT_END", 256)  # these models' window is 512
    d, t = _pair()
    engine = SpecGuard(d, t)
    cfg = _cfg(tau=0.0)
    first = engine.generate(SYSTEM + TURNS[0], config=cfg)
    assert first.target_tokens == 0 and all(s.source == "draft" for s in first.steps)
    history = SYSTEM + TURNS[0] + first.text + "\n" + TURNS[1]
    second = engine.generate(history, config=cfg)
    assert second.cached_tokens >= len(t.encode_prompt(SYSTEM + TURNS[0])) + first.draft_tokens - 2
    _same(second, SpecGuard(*_pair()).generate(history, config=_cfg(tau=0.0, prefix_cache_bytes=0)))

    def target_forwards(engine, prompt, cfg, **kw) -> int:
        """How many forwards the target ran in a generation the draft wrote alone."""
        seen: list[int] = []
        lm = engine.target.local_model
        hook = lm.model.register_forward_hook(lambda *_: seen.append(1))
        try:
            engine.generate(prompt, config=cfg, **kw)
        except GenerationTimeout:
            pass
        finally:
            hook.remove()
        return len(seen)

    long_prompt = SYSTEM + TURNS[2]
    assert target_forwards(SpecGuard(*_pair()), long_prompt, cfg) > 0  # read at the end
    fresh = SpecGuard(*_pair())
    steps = fresh.stream(long_prompt, config=cfg)
    next(steps)
    hook_seen: list[int] = []
    hook = fresh.target.local_model.model.register_forward_hook(lambda *_: hook_seen.append(1))
    steps.close()  # the caller stopped reading: not a clean end
    hook.remove()
    assert hook_seen == []
    # past its deadline (here before its first step): no read
    assert target_forwards(SpecGuard(*_pair()), long_prompt, cfg, timeout=1e-9) == 0
    # with the cache off the target stays lazy
    assert (
        target_forwards(SpecGuard(*_pair()), long_prompt, _cfg(tau=0.0, prefix_cache_bytes=0)) == 0
    )
    # a short tail is read when a step needs it
    assert len(t.encode_prompt(TURNS[0])) + 24 < local_target.READ_AT_END
    assert target_forwards(SpecGuard(*_pair()), TURNS[0], cfg) == 0

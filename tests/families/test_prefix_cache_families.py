"""The prefix cache on real tokenizers: tiny random models with Qwen3's and Llama 3.1's real
vocabularies, the same tokenizer for both models and a different one per model, through a
chat conversation that grows turn by turn. Greedy text and every step's signals are the same
with the cache on and off, and later turns read the earlier ones from the cache."""

from __future__ import annotations

import pytest
from fetch_assets import npm_tokenizer

from specguard_integrations import SpecGuard, SpecGuardConfig

SYSTEM = "You are a careful assistant. Answer in short steps. " * 8
TURNS = ["What is 3 + 4?", "And times 2?", "Minus 5?"]


def _lm(family: str, seed: int, layers: int):
    from transformers import AutoTokenizer

    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.testing import tiny_family_model

    tok = AutoTokenizer.from_pretrained(npm_tokenizer(family))
    arch = {"qwen3": "qwen3", "llama3_1": "llama"}[family]
    model = tiny_family_model(arch, tok, seed=seed, layers=layers)
    return LocalCausalLM(model, tok, name=f"{family}-{seed}")


def _conversation(draft, target, cache_bytes: int, tau: float):
    cfg = SpecGuardConfig.greedy(
        tau=tau, beta=0.5, max_new_tokens=20, max_step_tokens=6, prefix_cache_bytes=cache_bytes
    )
    engine = SpecGuard(draft, target, cfg)
    lm = engine.chat_model()
    msgs = [{"role": "system", "content": SYSTEM}]
    out = []
    for turn in TURNS:
        msgs.append({"role": "user", "content": turn})
        result = engine.generate(lm.render_chat(msgs), add_special_tokens=False)
        out.append(result)
        msgs.append({"role": "assistant", "content": result.text})
    return out


# tau sits among each pair's step scores, so that steps are kept and rejected in one run
@pytest.mark.parametrize(
    ("draft_family", "target_family", "tau"),
    [("qwen3", "qwen3", 0.225), ("qwen3", "llama3_1", 0.15)],
    ids=["same tokenizer", "qwen3 drafting for llama3.1"],
)
def test_the_cache_changes_nothing_on_real_vocabularies(draft_family, target_family, tau):
    on = _conversation(_lm(draft_family, 1, 2), _lm(target_family, 2, 3), 1 << 28, tau)
    off = _conversation(_lm(draft_family, 1, 2), _lm(target_family, 2, 3), 0, tau)
    for a, b in zip(on, off, strict=True):
        assert a.text == b.text
        assert [s.source for s in a.steps] == [s.source for s in b.steps]
        for x, y in zip(a.steps, b.steps, strict=True):
            assert x.confidence == pytest.approx(y.confidence, abs=1e-5)
            assert x.grounding == pytest.approx(y.grounding, abs=1e-5)
    assert all(r.draft_cached_tokens > 40 for r in on[1:])
    # the target reads the conversation only when it writes a step: then the earlier turns it
    # read come from the cache
    assert any(r.cached_tokens > 40 for r in on[1:])
    assert all(r.draft_cached_tokens == 0 and r.cached_tokens == 0 for r in off)
    # both paths ran: steps kept from the draft and steps the target wrote
    assert {s.source for r in on for s in r.steps} == {"draft", "target"}

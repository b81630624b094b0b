"""End-to-end invariants of the step loop on tiny random Llama and GPT-2 models."""

import pytest
import torch

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.backends.local.model import LocalCausalLM
from specguard_integrations.engine import signals
from specguard_integrations.testing import char_tokenizer, tiny_lm, tiny_model

PROMPT = "Tom has 3 apples and buys 4 more. How many apples does he have?\n"
ARCHS = ["llama", "gpt2"]


def pair(arch, **kw):
    return tiny_lm(arch, seed=1, layers=3), tiny_lm(arch, seed=2, layers=4, hidden=48, **kw)


def plain_greedy(lm: LocalCausalLM, prompt: str, n: int) -> str:
    ids = torch.tensor([lm.encode_prompt(prompt)])
    with torch.inference_mode():
        out = lm.model.generate(
            ids,
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=sorted(lm.eos_ids),
            pad_token_id=0,
        )
    new = [t for t in out[0, ids.shape[1] :].tolist() if t not in lm.eos_ids]
    return lm.decode(new)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("segmenter", ["blank_line", "newline"])
def test_tau_above_one_equals_greedy_target(arch, segmenter):
    draft, target = pair(arch)
    cfg = SpecGuardConfig(k=3, tau=1.01, max_step_tokens=7, max_new_tokens=40, segmenter=segmenter)
    result = SpecGuard(draft, target, cfg).generate(PROMPT)
    assert result.steps and all(s.source == "target" for s in result.steps)
    assert all(s.decision == "reject" for s in result.steps)
    assert result.target_call_rate == 1.0
    assert result.text == plain_greedy(target, PROMPT, 40)
    assert result.text == "".join(s.text for s in result.steps)


@pytest.mark.parametrize("arch", ARCHS)
def test_tau_zero_greedy_draft_equals_greedy_draft(arch):
    draft, target = pair(arch)
    cfg = SpecGuardConfig.greedy(tau=0.0, max_step_tokens=6, max_new_tokens=36)
    result = SpecGuard(draft, target, cfg).generate(PROMPT)
    assert all(s.source == "draft" and s.decision == "accept" for s in result.steps)
    assert result.text == plain_greedy(draft, PROMPT, 36)
    assert result.draft_tokens == 36 and result.finish_reason in ("max_new_tokens", "eos")


def test_same_seed_same_result_and_different_seed_differs():
    draft, target = pair("llama")
    sg = SpecGuard(
        draft, target, SpecGuardConfig(k=4, tau=0.5, max_step_tokens=6, max_new_tokens=30)
    )
    a = sg.generate(PROMPT)
    b = sg.generate(PROMPT)
    c = sg.generate(PROMPT, config=sg.config.merged(seed=123))
    strip = lambda r: [s.model_dump(exclude={"times"}) for s in r.steps]  # noqa: E731
    assert strip(a) == strip(b)
    assert a.text != c.text


def test_scores_equal_a_full_recomputation_after_fallbacks():
    """Incremental rollout + cropped caches give the numbers a from-scratch pass gives."""
    draft, target = pair("llama")
    # tau in the middle of the fused range: a mix of accepted and rejected steps
    cfg = SpecGuardConfig(k=3, tau=0.745, max_step_tokens=5, max_new_tokens=40, seed=3)
    steps = list(SpecGuard(draft, target, cfg).stream(PROMPT))
    assert {s.source for s in steps} == {"draft", "target"}, [s.fused for s in steps]
    ctx_ids = draft.encode_prompt(PROMPT)
    for s in steps:
        step_ids = draft.encode_continuation(s.draft_text)
        seq = torch.tensor([ctx_ids + step_ids])
        with torch.inference_mode(), draft.implementation("eager"):
            out = draft.model(input_ids=seq, output_attentions=True)
        n_ctx = len(ctx_ids)
        full = [signals.process_attention(a[0]) for a in out.attentions[-3:]]
        ctx = torch.tensor([1.0] * n_ctx + [0.0] * len(step_ids))
        g_ref = signals.grounding_from_matrices(full, ctx)[n_ctx:].min()
        lp = signals.token_logprobs(out.logits[0, n_ctx - 1 : -1], torch.tensor(step_ids))
        assert s.grounding == pytest.approx(float(g_ref), abs=1e-4)
        assert s.confidence == pytest.approx(float(lp.min()), abs=1e-4)
        ctx_ids = ctx_ids + draft.encode_continuation(s.text)


def test_stream_yields_records_then_result():
    draft, target = pair("llama")
    stream = SpecGuard(
        draft, target, SpecGuardConfig(k=2, max_step_tokens=5, max_new_tokens=20)
    ).stream(PROMPT)
    seen = []
    for rec in stream:
        seen.append(rec.step_index)
        assert stream.result is None
    assert seen == list(range(len(seen))) and stream.result is not None
    assert [s.step_index for s in stream.result.steps] == seen


def test_max_step_tokens_cuts_a_step_and_generation_goes_on():
    draft, target = pair("llama")
    r = SpecGuard(
        draft, target, SpecGuardConfig(k=2, max_step_tokens=4, max_new_tokens=13)
    ).generate(PROMPT)
    assert [s.num_tokens for s in r.steps] == [4, 4, 4, 1]  # 13 tokens: the budget ends it
    assert all(s.finish == "max_step_tokens" for s in r.steps)
    assert r.finish_reason == "max_new_tokens"


def test_max_steps_stops_generation():
    draft, target = pair("llama")
    r = SpecGuard(
        draft, target, SpecGuardConfig(k=1, temperature=0, max_step_tokens=3, max_steps=2)
    ).generate(PROMPT)
    assert r.num_steps == 2 and r.finish_reason == "max_steps"


def test_eos_inside_a_step_ends_generation_without_the_eos_text():
    draft, target = pair("llama")
    greedy = plain_greedy(draft, PROMPT, 12)
    eos_char = greedy[8]
    eos_id = draft.tokenizer.convert_tokens_to_ids(eos_char)
    draft.eos_ids = frozenset({eos_id})
    r = SpecGuard(draft, target, SpecGuardConfig.greedy(tau=0.0, max_step_tokens=50)).generate(
        PROMPT
    )
    assert r.finish_reason == "eos" and r.steps[-1].finish == "eos"
    assert r.text == greedy[: greedy.index(eos_char)]


def test_stop_sequence_cuts_text_before_it():
    draft, target = pair("llama")
    greedy = plain_greedy(draft, PROMPT, 20)
    stop = greedy[10:12]
    r = SpecGuard(draft, target, SpecGuardConfig.greedy(tau=0.0, max_step_tokens=50)).generate(
        PROMPT, stop=[stop]
    )
    assert r.finish_reason == "stop"
    assert r.text == greedy[: greedy.index(stop)]


def test_draft_without_attention_runs_confidence_only():
    draft = tiny_lm("llama", seed=1, attention=False)
    target = tiny_lm("llama", seed=2)
    r = SpecGuard(
        draft, target, SpecGuardConfig(k=2, max_step_tokens=5, max_new_tokens=15)
    ).generate(PROMPT)
    assert r.steps and all(s.signals == "confidence_only" and s.grounding is None for s in r.steps)
    assert all(s.fused == pytest.approx(s.confidence_norm) for s in r.steps)


def test_different_tokenizers_exchange_text():
    tok_d = char_tokenizer(extra_chars="é")  # a different vocabulary
    draft = LocalCausalLM(tiny_model("llama", vocab_size=len(tok_d), seed=1), tok_d, name="d")
    target = tiny_lm("gpt2", seed=2)
    sg = SpecGuard(
        draft, target, SpecGuardConfig(k=2, tau=0.745, max_step_tokens=5, max_new_tokens=30)
    )
    assert not draft.same_vocab(target) and draft.vocab_id != target.vocab_id
    r = sg.generate(PROMPT)
    assert r.text == "".join(s.text for s in r.steps) and r.num_steps >= 6
    cfg = SpecGuardConfig(tau=1.01, k=2, max_step_tokens=5, max_new_tokens=30)
    assert SpecGuard(draft, target, cfg).generate(PROMPT).text == plain_greedy(target, PROMPT, 30)


def test_bad_prompts_get_clear_errors():
    draft, target = pair("llama")
    sg = SpecGuard(draft, target)
    with pytest.raises(ValueError, match="prompt is empty"):
        sg.generate("   ")
    with pytest.raises(ValueError, match="context window of 512"):
        sg.generate("x" * 600)
    with pytest.raises(ValueError, match="stop sequences"):
        sg.generate("hi", stop=[""])


def test_context_window_ends_generation():
    draft, target = pair("llama")
    r = SpecGuard(
        draft, target, SpecGuardConfig(k=1, temperature=0, max_step_tokens=64, max_new_tokens=1000)
    ).generate("y" * 480)
    assert r.finish_reason in ("context_window", "eos")
    assert r.prompt_tokens + r.output_tokens <= 512


def test_mismatched_tokenizer_and_model_is_rejected():
    tok = char_tokenizer()
    with pytest.raises(ValueError, match="does not belong to this model"):
        LocalCausalLM(tiny_model("llama", vocab_size=50), tok)


def test_failed_step_leaves_the_state_usable(monkeypatch):
    draft, target = pair("llama")
    sg = SpecGuard(
        draft, target, SpecGuardConfig(k=2, tau=1.01, max_step_tokens=4, max_new_tokens=20)
    )
    stream = sg.stream(PROMPT)
    first = next(stream)
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        raise RuntimeError("device lost")

    monkeypatch.setattr(target.model, "forward", flaky)  # every path runs the model's forward
    with pytest.raises(RuntimeError, match="device lost"):
        next(stream)
    monkeypatch.undo()
    assert first.text and calls["n"] == 1
    # the models are still consistent for the next call
    again = sg.generate(PROMPT)
    assert again.text == plain_greedy(target, PROMPT, 20)


def test_from_pretrained_on_a_local_directory(tmp_path):
    for name, seed in (("draft", 1), ("target", 2)):
        lm = tiny_lm("llama", seed=seed)
        lm.model.save_pretrained(tmp_path / name)
        lm.tokenizer.save_pretrained(tmp_path / name)
    sg = SpecGuard.from_pretrained(
        str(tmp_path / "draft"),
        str(tmp_path / "target"),
        SpecGuardConfig(k=2, max_step_tokens=4, max_new_tokens=12),
        device="cpu",
    )
    r = sg.generate(PROMPT)
    assert r.output_tokens == 12 and sg.draft.lm.same_vocab(sg.target.lm)
    with pytest.raises(ValueError, match="cannot load causal LM"):
        SpecGuard.from_pretrained(str(tmp_path / "missing"), str(tmp_path / "target"))

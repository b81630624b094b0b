"""The target-verified judge on tiny random models: the target's log-probabilities of each step
come from its catch-up prefill (checked against a from-scratch forward, and by counting
forwards), across tokenizers, and from a remote target that echoes them."""

import json

import httpx
import pytest
import torch

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.backends.local.model import LocalCausalLM
from specguard_integrations.backends.remote.endpoint import EndpointTarget
from specguard_integrations.testing import char_tokenizer, tiny_lm, tiny_model

PROMPT = "Tom has 3 apples and buys 4 more. How many apples does he have?\n"


def cfg(**kw) -> SpecGuardConfig:
    base = dict(
        judge="target",
        tau=0.5,
        target_aggregate="mean",
        target_bounds=(-5.0, -4.4),
        max_step_tokens=6,
        max_new_tokens=36,
        segmenter="newline",
    )
    return SpecGuardConfig.greedy(**{**base, **kw})


def reference_logprobs(target: LocalCausalLM, ids: list[int], start: int) -> list[float]:
    """log p(ids[t] | ids[:t]) for t >= start, from one forward of the whole sequence."""
    with torch.inference_mode():
        logits = target.model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [logp[t - 1, ids[t]].item() for t in range(start, len(ids))]


def target_ids(target: LocalCausalLM, steps: list[str]) -> tuple[list[int], list[int]]:
    """The target's ids of prompt + steps (each step encoded as a continuation), and where
    each step starts."""
    ids = target.encode_prompt(PROMPT)
    starts = []
    for s in steps:
        starts.append(len(ids))
        ids = ids + target.encode_continuation(s)
    return ids, starts


def word_tokenizer():
    """A tokenizer that merges common pairs: the same text in other tokens than the draft's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    from specguard_integrations.testing import SPECIALS, bundled_style

    base = char_tokenizer().get_vocab()
    merges = [("a", "p"), ("ap", "p"), ("h", "e"), ("a", "n"), ("o", "w"), (" ", "a"), ("e", "s")]
    vocab = dict(base)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("\n", "isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    assert SPECIALS[1] == "<s>"
    return bundled_style(tok)


def pairs():
    draft = tiny_lm("llama", seed=1, layers=3)
    same = tiny_lm("llama", seed=2, layers=4, hidden=48)
    tok = word_tokenizer()
    other = LocalCausalLM(tiny_model("gpt2", vocab_size=len(tok), seed=3), tok, name="words")
    return {"same-vocab": (draft, same), "cross-tokenizer": (draft, other)}


@pytest.mark.parametrize("kind", ["same-vocab", "cross-tokenizer"])
def test_target_scores_equal_a_from_scratch_forward(kind):
    draft, target = pairs()[kind]
    # tau at the median score of a run that keeps every step: both verdicts occur
    kept = SpecGuard(draft, target, cfg(tau=0.0)).generate(PROMPT).steps
    median = sorted(s.target_norm for s in kept)[len(kept) // 2]
    result = SpecGuard(draft, target, cfg(tau=median)).generate(PROMPT)
    decisions = {s.decision for s in result.steps}
    assert decisions == {"accept", "reject"}, decisions  # both paths ran
    done: list[str] = []
    for step in result.steps:
        ids, starts = target_ids(target, [*done, step.draft_text])
        expected = reference_logprobs(target, ids, starts[-1])
        if step.finish == "eos" and target.eos_ids:  # the target judged the stop too
            expected = reference_logprobs(target, [*ids, min(target.eos_ids)], starts[-1])
        assert step.target_score == pytest.approx(sum(expected) / len(expected), abs=1e-4)
        norm = min(1.0, max(0.0, (step.target_score + 5.0) / 0.6))
        assert step.target_norm == pytest.approx(norm)
        assert step.fused == pytest.approx(norm)  # gamma = 1
        assert step.accepted == (norm >= median) and step.signals == "target_verified"
        done.append(step.text)
    assert result.text == "".join(done)
    if kind == "cross-tokenizer":  # the target reads the text in its own, fewer tokens
        assert len(target.encode_prompt(PROMPT)) < len(draft.encode_prompt(PROMPT))


def count_forwards(lm: LocalCausalLM, log: list[int]) -> None:
    real = lm.forward_alone

    def counted(ids, cache, rollout_layers=0, hidden=False, keep=None):
        log.append(len(ids))
        return real(ids, cache, rollout_layers, hidden, keep)

    lm.forward_alone = counted  # type: ignore[method-assign]


def test_an_accepted_step_is_prefilled_once_and_never_again():
    draft, target = pairs()["same-vocab"]
    fed: list[int] = []
    count_forwards(target, fed)
    result = SpecGuard(draft, target, cfg(tau=0.0)).generate(PROMPT)  # every step kept
    assert all(s.accepted for s in result.steps) and result.num_steps >= 4
    # one forward per step: the first carries the prompt, each later one that step's tokens
    prompt = len(target.encode_prompt(PROMPT))
    assert len(fed) == result.num_steps
    assert fed == [prompt + result.steps[0].num_tokens] + [s.num_tokens for s in result.steps[1:]]


def test_a_rejected_step_costs_no_second_prefill_of_the_context():
    draft, target = pairs()["same-vocab"]
    fed: list[int] = []
    count_forwards(target, fed)
    engine = SpecGuard(draft, target, cfg(tau=1.01, target_speculation=0))  # every step rejected
    result = engine.generate(PROMPT)
    assert not any(s.accepted for s in result.steps)
    # per step: one prefill of the draft step, then one forward per token the target writes;
    # nothing the target had fed is fed again
    prompt = len(target.encode_prompt(PROMPT))
    verified = [s.draft_tokens for s in result.steps]
    written = sum(s.num_tokens for s in result.steps)
    assert sum(fed) <= prompt + sum(verified) + written + result.num_steps
    # and the text is the target's own greedy text, as with the draft's judge at tau > 1
    plain = SpecGuard(draft, target, cfg(judge="draft", tau=1.01)).generate(PROMPT)
    assert result.text == plain.text


def test_a_band_verifies_only_the_unsure_steps_and_feeds_nothing_twice():
    draft, target = pairs()["same-vocab"]
    base = cfg(beta=1.0, target_speculation=0)
    # the band: the middle of the draft scores of a run that keeps every step
    kept = SpecGuard(draft, target, base.merged(tau=0.0)).generate(PROMPT).steps
    r_draft = sorted(s.confidence_norm for s in kept)
    lo, hi = r_draft[len(r_draft) // 4], r_draft[(3 * len(r_draft)) // 4]
    tau = sorted(s.target_norm for s in kept)[len(kept) // 2]
    fed: list[int] = []
    count_forwards(target, fed)
    banded = base.merged(tau=tau, target_band=(lo, hi))
    result = SpecGuard(draft, target, banded).generate(PROMPT)
    verified = [s for s in result.steps if s.target_score is not None]
    skipped = [s for s in result.steps if s.target_score is None]
    assert verified and skipped, [s.confidence_norm for s in result.steps]
    for s in verified:  # inside the band the target decides
        assert lo <= s.confidence_norm <= hi and s.accepted == (s.target_norm >= tau)
    for s in skipped:  # outside it the draft does: kept above, rejected below
        assert not lo <= s.confidence_norm <= hi and s.accepted == (s.confidence_norm > hi)
        assert s.signals == "draft_band"
    # nothing the target was fed is fed again: the prompt, every verified draft step, every
    # step kept on the draft's word (caught up later), and what the target wrote, once each
    prompt = len(target.encode_prompt(PROMPT))
    written = sum(s.num_tokens for s in result.steps if s.source == "target")
    kept_unverified = sum(s.num_tokens for s in skipped if s.accepted)
    bound = prompt + sum(s.draft_tokens for s in verified) + kept_unverified + written
    assert sum(fed) <= bound + result.num_steps
    assert len(fed) < sum(s.num_tokens for s in result.steps)  # not token by token


def test_tau_zero_and_above_one_bracket_the_judge():
    draft, target = pairs()["same-vocab"]
    keep = SpecGuard(draft, target, cfg(tau=0.0)).generate(PROMPT)
    draft_only = SpecGuard(draft, target, cfg(judge="draft", tau=0.0)).generate(PROMPT)
    assert keep.text == draft_only.text
    assert all(s.target_score is not None for s in keep.steps)
    assert all(s.target_score is None for s in draft_only.steps)


def test_an_explicit_judge_and_a_config_judge_conflict():
    from specguard_integrations.engine.policy import FusionJudge

    draft, target = pairs()["same-vocab"]
    with pytest.raises(ValueError, match="choose one"):
        SpecGuard(draft, target, judge=FusionJudge()).generate(PROMPT, config=cfg())


def fake_vllm(lm: LocalCausalLM, log: list[dict]) -> httpx.MockTransport:
    """/v1/completions over a local character-level model, as vLLM answers: greedy text with
    the stop string kept and named, and ``echo`` with per-token logprobs and char offsets."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        log.append(body)
        text = body["prompt"]
        ids = lm.encode_prompt(text)  # BOS + one id per character
        out, finish, reason = "", "length", None
        for _ in range(body["max_tokens"]):
            with torch.inference_mode():
                logits = lm.model(torch.tensor([ids])).logits[0, -1].clone()
                logits[[0, 1, 3]] = -torch.inf  # no pad, BOS or unk: a character per token
            nxt = int(logits.argmax())
            if nxt in lm.eos_ids:
                finish = "stop"
                break
            ids.append(nxt)
            out += lm.decode([nxt])
            hit = next((s for s in body.get("stop") or [] if out.endswith(s)), None)
            if hit:
                finish, reason = "stop", hit
                break
        choice = {"index": 0, "text": out, "finish_reason": finish, "stop_reason": reason}
        if body.get("echo"):
            whole = body["prompt"] + out
            lp = reference_logprobs(lm, lm.encode_prompt(whole), 1)
            choice["text"] = whole
            choice["logprobs"] = {
                "tokens": list(whole),
                "text_offset": list(range(len(whole))),
                "token_logprobs": [None, *lp[1:]],
            }
        usage = {"prompt_tokens": len(text) + 1, "completion_tokens": len(out)}
        return httpx.Response(200, json={"choices": [choice], "usage": usage})

    return httpx.MockTransport(answer)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.01])
def test_a_remote_target_echoes_the_same_scores_as_the_local_one(tau):
    tok_d = char_tokenizer(extra_chars="é")  # another vocabulary: text crosses in both runs
    draft = LocalCausalLM(tiny_model("llama", vocab_size=len(tok_d), seed=1), tok_d, name="d")
    target = tiny_lm("llama", seed=2, layers=4, hidden=48)
    log: list[dict] = []
    remote = EndpointTarget("http://vllm.test", "t", engine="vllm")
    remote.http._client = httpx.Client(transport=fake_vllm(target, log))
    config = cfg(tau=tau, max_new_tokens=24)
    here = SpecGuard(draft, target, config).generate(PROMPT)
    there = SpecGuard(draft, remote, config).generate(PROMPT)
    assert there.text == here.text
    for a, b in zip(here.steps, there.steps, strict=True):
        assert a.decision == b.decision
        if a.finish != "eos":
            assert b.target_score == pytest.approx(a.target_score, abs=1e-4)
    echoes = [b for b in log if b.get("echo")]
    assert len(echoes) == there.num_steps and all(b["logprobs"] == 1 for b in echoes)
    # each step's verification is one request; a rejected step then costs one more
    assert len(log) == there.num_steps + there.target_steps

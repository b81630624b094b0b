"""The target-verified judge's arithmetic, the echoed log-probabilities a server returns, and
the refusal where a target cannot give them (no model, no server)."""

import math

import httpx
import pytest

from specguard_integrations import SpecGuardConfig
from specguard_integrations.backends.remote.endpoint import EndpointTarget
from specguard_integrations.backends.remote.replies import read_echo
from specguard_integrations.engine.backends import StepSignals
from specguard_integrations.engine.policy import TargetJudge, aggregate, judge_for
from specguard_integrations.errors import EndpointReplyError


def test_the_verdict_follows_the_hand_computed_formula():
    lps = (-0.1, -0.5, -2.0)
    cfg = SpecGuardConfig(
        beta=0.5,
        tau=0.6,
        judge="target",
        target_aggregate="mean",
        target_bounds=(-3.0, 0.0),
        target_weight=0.75,
        confidence_bounds=(-4.0, 0.0),
        grounding_bounds=(0.0, 1.0),
    )
    sig = StepSignals(confidence=-1.0, grounding=0.4, target_logprobs=lps)
    v = TargetJudge().judge(sig, "ctx", "step", cfg)
    t = (-0.1 - 0.5 - 2.0) / 3  # -0.8667
    t_norm = (t + 3.0) / 3.0  # 0.7111
    draft = 0.5 * (3.0 / 4.0) + 0.5 * 0.4  # r_draft = 0.575
    r = 0.75 * t_norm + 0.25 * draft  # 0.6771
    assert v.target_score == pytest.approx(t) and v.target_norm == pytest.approx(t_norm)
    assert v.fused == pytest.approx(r) and v.accept and v.signals == "target_verified"
    # the min aggregate of the same step falls below tau: t~ = 1/3, r = 0.3938
    low = TargetJudge().judge(sig, "ctx", "step", cfg.merged(target_aggregate="min"))
    assert low.fused == pytest.approx(0.75 * (1.0 / 3.0) + 0.25 * draft) and not low.accept
    # gamma = 1: the target's score alone, whatever the draft says
    alone = TargetJudge().judge(
        StepSignals(-9.0, 0.0, lps), "c", "s", cfg.merged(target_weight=1.0)
    )
    assert alone.fused == pytest.approx(t_norm) and alone.accept


def test_aggregates_and_an_empty_step():
    xs = [-3.0, -1.0, -0.5, 0.0]
    assert aggregate(xs, "min") == -3.0 and aggregate(xs, "mean") == -1.125
    assert aggregate(xs, "quantile", 0.5) == pytest.approx(-0.75)  # between -1 and -0.5
    assert aggregate(xs, "quantile", 0.0) == -3.0 and aggregate(xs, "quantile", 1.0) == 0.0
    with pytest.raises(ValueError, match="empty"):
        aggregate([], "mean")
    # no token the target could score (an EOS-only step on a remote target): the draft decides
    cfg = SpecGuardConfig(judge="target", tau=0.5, beta=1.0, confidence_bounds=(-2.0, 0.0))
    v = TargetJudge().judge(StepSignals(-0.5, None, ()), "c", "", cfg)
    assert v.target_score is None and v.fused == pytest.approx(0.75) and v.accept
    with pytest.raises(ValueError, match="log-probabilities"):
        TargetJudge().judge(StepSignals(-0.5, None, None), "c", "s", cfg)


def test_the_band_leaves_the_sure_steps_to_the_draft():
    # r_draft = l~ (no grounding): confidence -0.2 -> 0.9, -1.0 -> 0.5, -1.8 -> 0.1
    cfg = SpecGuardConfig(
        judge="target", tau=0.5, beta=1.0, confidence_bounds=(-2.0, 0.0), target_band=(0.3, 0.8)
    )
    judge, sure, unsure, bad = (
        TargetJudge(),
        StepSignals(-0.2, None, None),
        StepSignals(-1.0, None, None),
        StepSignals(-1.8, None, None),
    )
    assert [judge.needs_target(s, cfg) for s in (sure, unsure, bad)] == [False, True, False]
    kept = judge.judge(sure, "c", "s", cfg)  # above the band: kept without the target
    assert kept.accept and kept.target_score is None and kept.fused == pytest.approx(0.9)
    assert kept.signals == "draft_band"
    assert not judge.judge(bad, "c", "s", cfg).accept  # below it: rejected without the target
    with pytest.raises(ValueError, match="log-probabilities"):  # inside it the target must speak
        judge.judge(unsure, "c", "s", cfg)
    # inside the band the target's score decides, whatever the draft says (gamma = 1)
    v = judge.judge(StepSignals(-1.0, None, (-2.9,)), "c", "s", cfg)
    assert v.target_score == pytest.approx(-2.9) and not v.accept
    # the band's ends are kept: 0.3 and 0.8 themselves are verified; the default verifies all
    edge = SpecGuardConfig(judge="target", beta=1.0, confidence_bounds=(-2.0, 0.0))
    assert judge.needs_target(StepSignals(0.0, None, None), edge)
    assert judge.needs_target(StepSignals(-2.0, None, None), edge)
    assert judge.needs_target(StepSignals(-1.4, None, None), cfg)  # r_draft = 0.3
    with pytest.raises(ValueError, match="target_band"):
        SpecGuardConfig(judge="target", target_band=(0.8, 0.3))
    with pytest.raises(ValueError, match="judge='target'"):  # the draft's judge has no band
        SpecGuardConfig(target_band=(0.2, 0.8))
    with pytest.raises(ValueError, match="target_band"):
        SpecGuardConfig(judge="target", target_band=(-0.1, 1.0))
    # the draft's judge never asks the target; a judge of one's own that reads the target
    # (which a band cannot go with) has every step verified
    from specguard_integrations.engine.policy import needs_target

    assert needs_target(judge_for(SpecGuardConfig()), unsure, cfg) is False
    assert needs_target(judge, sure, cfg) is False and needs_target(judge, unsure, cfg)

    class Older:
        reads_target = True

        def judge(self, signals, context, step, config):
            return TargetJudge().judge(signals, context, step, config)

    plain = SpecGuardConfig(beta=1.0, confidence_bounds=(-2.0, 0.0))
    assert all(needs_target(Older(), x, plain) for x in (sure, unsure, bad))


def test_config_names_the_judge_and_checks_its_fields():
    assert judge_for(SpecGuardConfig()).reads_target is False
    assert judge_for(SpecGuardConfig(judge="target")).reads_target is True
    with pytest.raises(ValueError, match="target_bounds"):
        SpecGuardConfig(target_bounds=(0.0, -1.0))
    with pytest.raises(ValueError):
        SpecGuardConfig(target_weight=1.5)
    with pytest.raises(ValueError):
        SpecGuardConfig(judge="oracle")


HEAD, STEP = "Q: 2 + 3?\n", "2 + 3 = 5\n\n"


def echo(text: str, offsets: list[int], values: list[float | None]) -> dict:
    tokens = [text[a:b] for a, b in zip(offsets, [*offsets[1:], len(text)], strict=True)]
    return {
        "choices": [
            {
                "text": text,
                "logprobs": {"tokens": tokens, "text_offset": offsets, "token_logprobs": values},
            }
        ]
    }


def test_echo_places_tokens_by_their_text_whatever_the_engine_says_of_offsets():
    text = HEAD + STEP + "A"
    step_values = [-0.3, -0.4, -0.5]
    tokens = ["Q: 2 + 3?", "\n", "2 + ", "3 = ", "5\n\n", "A"]
    values = [None, -0.2, *step_values, -9.0]
    # vLLM: a BOS token's text first, every offset shifted by it
    vllm = echo(text, [0, 9, 10, 14, 18, 21], values)
    vllm["choices"][0]["logprobs"].update(
        tokens=["<s>", *tokens],
        token_logprobs=[None, *values],
        text_offset=[0, 3, 12, 13, 17, 21, 24],
    )
    # SGLang: no offsets at all (-1 each); llama-cpp-python: a special token rendered as ""
    sglang = echo(text, [0, 9, 10, 14, 18, 21], values)
    sglang["choices"][0]["logprobs"]["text_offset"] = [-1] * 6
    llama = echo(text, [0, 9, 10, 14, 18, 21], values)
    llama["choices"][0]["logprobs"].update(
        tokens=["", *tokens], token_logprobs=[None, -0.1, *values[1:]], text_offset=[0] * 7
    )
    # a generated end of sequence that is not in the text
    eos = echo(HEAD + STEP, [0, 9, 10, 14, 18], values[:-1])
    eos["choices"][0]["logprobs"].update(
        tokens=[*tokens[:-1], "</s>"], token_logprobs=values, text_offset=[0, 9, 10, 14, 18, 21]
    )
    for data in (vllm, sglang, llama, eos):
        assert read_echo(data, HEAD, STEP, "srv") == step_values


def test_echo_reads_the_step_tokens_only():
    text = HEAD + STEP + "A"  # the one generated token after the step
    # tokens: "Q: 2 + 3?" , "\n" (context), "2 + ", "3 = ", "5\n\n" (step), "A" (generated)
    offsets = [0, 9, 10, 14, 18, 21]
    data = echo(text, offsets, [None, -0.2, -0.3, -0.4, -0.5, -9.0])
    assert read_echo(data, HEAD, STEP, "srv") == [-0.3, -0.4, -0.5]
    # a token that straddles the context's end belongs to the step (it writes step text)
    data = echo(text, [0, 8, 14, 18, 21], [None, -0.1, -0.4, -0.5, -9.0])
    assert read_echo(data, HEAD, STEP, "srv") == [-0.1, -0.4, -0.5]


@pytest.mark.parametrize(
    "broken, match",
    [
        (lambda d: d["choices"][0].pop("logprobs"), "no logprobs"),
        (lambda d: d["choices"][0]["logprobs"]["token_logprobs"].pop(), "do not match"),
        (
            lambda d: d["choices"][0]["logprobs"]["tokens"].__setitem__(3, "3 + "),
            "not the text at its place",
        ),
        (
            lambda d: d["choices"][0]["logprobs"].update(tokens=["A"], token_logprobs=[-1.0]),
            "fewer tokens",
        ),
        (lambda d: d["choices"][0]["logprobs"]["token_logprobs"].__setitem__(3, 0.7), "0.7"),
        (lambda d: d["choices"][0]["logprobs"]["token_logprobs"].__setitem__(3, math.nan), "nan"),
        (
            lambda d: d["choices"][0]["logprobs"]["token_logprobs"].__setitem__(3, "x"),
            "no log-probability",
        ),
        (lambda d: d["choices"][0].update(text="something else"), "did not echo"),
        (
            lambda d: d["choices"][0]["logprobs"].update(
                tokens=["x"] * 500, text_offset=list(range(500)), token_logprobs=[-1.0] * 500
            ),
            "500 tokens",
        ),
        (lambda d: d.update(choices=[]), "no logprobs"),
    ],
)
def test_a_malformed_echo_is_a_typed_error(broken, match):
    text = HEAD + STEP + "A"
    data = echo(text, [0, 9, 10, 14, 18, 21], [None, -0.2, -0.3, -0.4, -0.5, -9.0])
    broken(data)
    with pytest.raises(EndpointReplyError, match=match):
        read_echo(data, HEAD, STEP, "srv")


# llama.cpp's own server ignores echo: no prompt log-probabilities
@pytest.mark.parametrize("engine", ["llamacpp", "tgi", "ollama", "generic"])
def test_engines_without_prompt_logprobs_are_refused_by_name(engine):
    target = EndpointTarget("http://127.0.0.1:9", "m", engine=engine)
    why = target.verify_refusal()
    assert why is not None and engine in why and "http://127.0.0.1:9" in why


@pytest.mark.parametrize("engine", ["vllm", "sglang", "llama-cpp-python"])
def test_engines_that_echo_logprobs_are_taken(engine):
    assert EndpointTarget("http://127.0.0.1:9", "m", engine=engine).verify_refusal() is None
    chat = EndpointTarget("http://127.0.0.1:9", "m", engine=engine, api="chat")
    if chat.profile.prefill == "flags":  # the chat API alone: the text is not at hand
        assert "chat_template" in (chat.verify_refusal() or "")


def test_the_loop_refuses_the_judge_before_anything_is_sent():
    from specguard_integrations import SpecGuard
    from specguard_integrations.testing import tiny_lm

    sent: list[httpx.Request] = []
    target = EndpointTarget("http://127.0.0.1:9", "m", engine="ollama")
    target.http._client = httpx.Client(transport=httpx.MockTransport(sent.append))
    engine = SpecGuard(tiny_lm(seed=1), target, SpecGuardConfig.greedy(judge="target"))
    with pytest.raises(ValueError, match=r"target-verified judge cannot run.*ollama"):
        engine.generate("Q: 1 + 1?\n")
    with pytest.raises(ValueError, match=r"target-verified judge cannot run.*ollama"):
        engine.stream("Q: 1 + 1?\n", config=SpecGuardConfig.greedy(judge="target"))
    assert sent == []

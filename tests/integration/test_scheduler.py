"""The step scheduler: concurrent generations share grouped forwards and each gets what it gets
alone; the k candidates of a request share their prefix; models that cannot group run plain."""

import asyncio
import threading

import pytest
import torch

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.backends.local.sampling import sample_steps
from specguard_integrations.backends.local.state import DecodeJob
from specguard_integrations.engine.policy import FusionJudge
from specguard_integrations.registry import load_pair
from specguard_integrations.runtime.grouped import decode_jobs
from specguard_integrations.runtime.scheduler import SCHEDULER
from specguard_integrations.segmentation import make_segmenter
from specguard_integrations.tasks import FAMILIES, make_split
from specguard_integrations.testing import char_tokenizer, tiny_family_model, tiny_lm

FAIL = "FAIL " + make_split("arithmetic", "test", 9)[8].prompt


class FailingJudge(FusionJudge):
    """Fails the second step of the request whose prompt is `FAIL` (and no other)."""

    def judge(self, signals, context, step, config):
        if context.startswith(FAIL) and len(context) > len(FAIL):
            raise RuntimeError("judge failed on purpose")
        return super().judge(signals, context, step, config)


def _requests():
    """16 requests: four bundled families, greedy configs with different tau, budgets and stops,
    and seeded sampling at k = 4."""
    base = load_pair(None, None, None, device="cpu").config
    items = [it for f in FAMILIES for it in make_split(f, "test", 4, seed=3)]
    configs = [
        base,
        base.merged(tau=0.0),  # every step the draft's
        base.merged(tau=1.01, max_new_tokens=60),  # every step the target's
        base.merged(k=4, temperature=0.7, seed=11, max_step_tokens=24),  # seeded sampling
    ]
    out = []
    for i, item in enumerate(items[:15]):
        stop = ["\n\nAnswer"] if i % 5 == 4 else None
        out.append((item.prompt, configs[i % len(configs)], stop))
    out.append((FAIL, base.merged(tau=0.0), None))
    return out


def _same(a, b):
    assert a.text == b.text
    assert [(s.source, s.num_tokens, s.draft_tokens, s.decision) for s in a.steps] == [
        (s.source, s.num_tokens, s.draft_tokens, s.decision) for s in b.steps
    ]
    for x, y in zip(a.steps, b.steps, strict=True):
        assert x.confidence == pytest.approx(y.confidence, abs=1e-4)
        assert (x.grounding is None) == (y.grounding is None)
        if x.grounding is not None:
            assert x.grounding == pytest.approx(y.grounding, abs=1e-4)
        assert x.fused == pytest.approx(y.fused, abs=1e-4)


def test_sixteen_concurrent_requests_equal_their_runs_alone():
    engine = load_pair(None, None, None, device="cpu")
    engine = SpecGuard(engine.draft, engine.target, engine.config, judge=FailingJudge())
    requests = _requests()
    alone = []
    for prompt, cfg, stop in requests:
        try:
            alone.append(engine.generate(prompt, config=cfg, stop=stop))
        except RuntimeError as err:
            alone.append(err)
    assert isinstance(alone[-1], RuntimeError) and not isinstance(alone[0], Exception)
    batcher = engine.draft.lm.runner
    before = (batcher.batches, batcher.jobs)
    results: list = [None] * len(requests)
    cancelled: list = []
    start = threading.Barrier(len(requests) + 1)

    def run(i, prompt, cfg, stop):
        start.wait()
        try:
            if i == 1:  # cancelled after two steps: its consumer goes away
                stream = engine.stream(prompt, config=cfg, stop=stop)
                cancelled.extend([next(stream), next(stream)])
                stream.close()
            else:
                results[i] = engine.generate(prompt, config=cfg, stop=stop)
        except RuntimeError as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    # grouped calls happened: fewer calls than jobs
    batches, jobs = batcher.batches - before[0], batcher.jobs - before[1]
    assert batcher.largest >= 4 and jobs > batches, (batches, jobs)
    for i, (got, want) in enumerate(zip(results, alone, strict=True)):
        cfg = requests[i][1]
        if i == 1:
            continue
        if isinstance(want, Exception):
            assert isinstance(got, RuntimeError) and "on purpose" in str(got)
        elif cfg.temperature == 0:  # greedy: the same run, step for step
            _same(got, want)
        else:  # seeded sampling draws from logits ~1e-5 apart: a complete run of its own
            assert got.text and got.finish_reason in ("final_answer", "eos", "max_new_tokens")
    assert [s.text for s in cancelled] == [s.text for s in alone[1].steps[:2]]
    # the engine is idle and whole afterwards
    again = engine.generate(requests[0][0], config=requests[0][1])
    _same(again, alone[0])


def test_generate_batch_keeps_order_and_reports_a_failure_in_place():
    engine = load_pair(None, None, None, device="cpu")
    engine = SpecGuard(engine.draft, engine.target, engine.config, judge=FailingJudge())
    prompts = [it.prompt for it in make_split("arithmetic", "test", 5)] + [FAIL]
    configs = [None, engine.config.merged(tau=0.0)] * 3
    out = engine.generate_batch(prompts, configs=configs, return_exceptions=True)
    assert isinstance(out[-1], RuntimeError)
    for prompt, cfg, got in zip(prompts[:-1], configs, out, strict=False):
        _same(got, engine.generate(prompt, config=cfg))
    with pytest.raises(RuntimeError, match="on purpose"):
        engine.generate_batch(prompts)
    with pytest.raises(ValueError, match="2 configs for 6 prompts"):
        engine.generate_batch(prompts, configs=configs[:2])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prompts": "Question: 1?"}, TypeError, "prompts must be a list of strings, got str"),
        ({"prompts": ["Q: 1?", 5]}, TypeError, r"prompts\[1\] must be a string, got int"),
        ({"configs": [None, {"k": 2}]}, TypeError, r"configs\[1\] must be a SpecGuardConfig"),
        ({"configs": "greedy"}, TypeError, "configs must be a SpecGuardConfig or a list"),
        ({"max_concurrency": None}, TypeError, "max_concurrency must be an int"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be >= 1, got 0"),
        ({"timeout": -1}, ValueError, "timeout must be > 0 seconds, got -1"),
        ({"stop": 5}, TypeError, "stop must be a string or a list of strings"),
    ],
)
def test_generate_batch_refuses_bad_arguments_before_running_anything(kwargs, error, message):
    engine = load_pair(None, None, None, device="cpu")
    call = {"prompts": ["Question: What is 3 + 4?\n", "Question: What is 5 + 6?\n"], **kwargs}
    batcher = engine.draft.lm.runner
    before = batcher.jobs
    with pytest.raises(error, match=message):
        engine.generate_batch(call.pop("prompts"), return_exceptions=True, **call)
    assert batcher.jobs == before  # nothing ran


def test_an_empty_prompt_fails_in_its_place_and_a_dict_config_is_refused_by_generate():
    engine = load_pair(None, None, None, device="cpu")
    good = "Question: What is 3 + 4?\n"
    out = engine.generate_batch([good, " ", good], return_exceptions=True)
    assert isinstance(out[1], ValueError) and str(out[1]) == "prompts[1] is empty"
    assert out[0].text == out[2].text == engine.generate(good).text
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        engine.generate_batch([good, ""])
    with pytest.raises(TypeError, match="config must be a SpecGuardConfig, got dict"):
        engine.generate(good, config={})


def test_a_langchain_llm_batch_keeps_a_failure_in_its_place():
    from specguard_integrations.langchain import SpecGuardLLM

    llm = SpecGuardLLM()
    prompts = ["Question: What is 3 + 4?\n", "", "Question: What is 5 + 6?\n"]
    for out in (
        llm.batch(prompts, return_exceptions=True),
        asyncio.run(llm.abatch(prompts, return_exceptions=True)),
    ):
        assert isinstance(out[1], ValueError)
        assert out[0] == llm.invoke(prompts[0]) and out[2] == llm.invoke(prompts[2])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen3"])
def test_k_candidates_share_the_prefix_and_sample_as_a_copied_prefix_would(arch):
    """Grouped decoding (prefix read in place) against the old layout (prefix copied k times),
    same seed: same candidates, same hidden-state embeddings."""
    if arch == "qwen3":  # grouped-query attention: 4 query heads over 2 key heads
        tok = char_tokenizer()
        from specguard_integrations.backends.local.model import LocalCausalLM

        lm = LocalCausalLM(tiny_family_model("qwen3", tok, seed=4, layers=3), tok)
    else:
        lm = tiny_lm(arch, seed=4, layers=3)
    SCHEDULER.attach(lm)  # the runtime's batcher, which decides grouping, is its runner
    assert lm.runner.grouping
    seg = make_segmenter("newline", ())
    from specguard_integrations.engine.backends import DecodeSettings

    settings = DecodeSettings(8, 0.9, 0.95, 12, seg)
    runs = []
    for grouping in (True, False):
        lm.runner.grouping = grouping
        state = lm.new_state(lm.encode_prompt("Tom has 3 apples and 4 pears.\n" * 6))
        lm.feed(state, hidden=True)
        gen = torch.Generator().manual_seed(5)
        runs.append(sample_steps(lm, state, settings, gen))
        assert state.cache.get_seq_length() == len(state.ids)  # the prefix is untouched
    for a, b in zip(*runs, strict=True):
        assert (a.ids, a.finish) == (b.ids, b.finish)
        assert torch.allclose(a.embedding, b.embedding, atol=1e-5)


def test_jobs_in_one_decode_loop_end_on_their_own_budgets():
    lm = tiny_lm("llama", seed=4, layers=3)
    from specguard_integrations.engine.backends import DecodeSettings

    seg = make_segmenter("newline", ())
    jobs, alone = [], []
    for n, budget in enumerate((3, 9, 1)):
        prompt = "ab" * (n + 2)
        for target in (jobs, alone):
            state = lm.new_state(lm.encode_prompt(prompt))
            lm.feed(state, hidden=True)
            settings = DecodeSettings(2, 1.0, 1.0, budget, seg)
            target.append(DecodeJob(state, settings, torch.Generator().manual_seed(n)))
    with torch.inference_mode():
        decode_jobs(lm, jobs)
        for job in alone:
            decode_jobs(lm, [job])
    for a, b in zip(jobs, alone, strict=True):
        assert [c.ids for c in a.out] == [c.ids for c in b.out]
        assert all(len(c.scored_ids) <= a.settings.max_tokens for c in a.out)


def test_models_that_cannot_group_run_plain():
    tok = char_tokenizer()
    from specguard_integrations.backends.local.model import LocalCausalLM

    sliding = LocalCausalLM(tiny_family_model("gemma3", tok, seed=1), tok)
    SCHEDULER.attach(sliding)
    assert not sliding.runner.grouping  # sliding-window layers
    target = tiny_lm("llama", seed=2, layers=3)
    r = SpecGuard(sliding, target, SpecGuardConfig(k=2, max_new_tokens=20, seed=1)).generate(
        "Tom has 3 apples.\n"
    )
    assert r.text and sliding.runner.batches == 0


def test_framework_batches_go_through_the_scheduler():
    """LangChain `batch`/`abatch` and LlamaIndex async calls run concurrently, so their model
    calls are grouped, and each answer is the one a single call gives."""
    import asyncio

    from specguard_integrations.langchain import ChatSpecGuard, SpecGuardLLM
    from specguard_integrations.llama_index import SpecGuardLLM as IndexLLM

    engine = load_pair(None, None, None, device="cpu")
    prompts = [it.prompt for it in make_split("arithmetic", "test", 6)]
    batcher = engine.draft.lm.runner
    chat, llm, index = (
        ChatSpecGuard(engine=engine),
        SpecGuardLLM(engine=engine),
        IndexLLM(engine=engine),
    )
    single = [llm.invoke(p).strip() for p in prompts]

    async def index_all():
        return await asyncio.gather(*(index.acomplete(p) for p in prompts))

    runs = {
        "chat.batch": lambda: [m.content for m in chat.batch(prompts)],
        "chat.abatch": lambda: [m.content for m in asyncio.run(chat.abatch(prompts))],
        "llm.batch": lambda: llm.batch(prompts),
        "llm.abatch": lambda: asyncio.run(llm.abatch(prompts)),
        "llama_index acomplete": lambda: [r.text for r in asyncio.run(index_all())],
    }
    for name, run in runs.items():
        batcher.largest = 0
        assert [str(t).strip() for t in run()] == single, name
        assert batcher.largest >= 2, name

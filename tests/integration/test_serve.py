"""Scale-out on loopback: `specguard serve` started as a real process (no mocks of the server).

- plain mode serves the bundled target; `EndpointTarget` / `EndpointDraft` / LangChain's
  completions client drive SpecGuard against it;
- specguard mode is called with the `openai` client and LangChain's `ChatOpenAI`;
- bad requests get 4xx and the server keeps serving; the queue bound answers 503;
- SIGTERM lets an in-flight request finish and the process exits cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from specguard_integrations import SpecGuard
from specguard_integrations.assets import DEFAULT_CONFIG
from specguard_integrations.backends.remote.endpoint import EndpointDraft, EndpointTarget
from specguard_integrations.config import SpecGuardConfig
from specguard_integrations.errors import EndpointError, EndpointUnreachable
from specguard_integrations.langchain import LangChainTarget
from specguard_integrations.registry import load_lm, load_pair, resolve
from specguard_integrations.tasks import make_split

TARGET_NAME = "specguard-bundled/target"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "specguard_integrations.cli",
            "serve",
            "--port",
            str(self.port),
            "--device",
            "cpu",
            "--log-level",
            "warning",
            *args,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not start in 120 s")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def plain_server():
    srv = Server("--mode", "plain", "--workers", "4")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sg_server():
    srv = Server(
        "--mode", "specguard", "--workers", "1", "--max-queue", "1", "--max-body-bytes", "20000"
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def cfg():
    return SpecGuardConfig.from_file(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def local(cfg):
    return load_pair(None, None, cfg, device="cpu")


def _items(n_per_family: int = 2):
    return [
        it
        for fam in ("arithmetic", "equation", "multihop")
        for it in make_split(fam, "test", n_per_family)
    ]


# ------------------------------------------------------------------ endpoint target
def test_endpoint_target_writes_the_same_steps_as_the_local_target(plain_server, local, cfg):
    draft = load_lm(resolve(None, "draft"), device="cpu")
    remote = SpecGuard(draft, EndpointTarget(plain_server.url, TARGET_NAME), cfg)
    fallbacks = 0
    for item in _items():
        a, b = local.generate(item.prompt), remote.generate(item.prompt)
        assert b.text == a.text
        assert [s.source for s in b.steps] == [s.source for s in a.steps]
        assert [s.num_tokens for s in b.steps] == [s.num_tokens for s in a.steps]
        assert b.prompt_tokens == a.prompt_tokens
        fallbacks += b.target_steps
    assert fallbacks > 0  # the endpoint really wrote steps


def test_endpoint_target_keeps_many_requests_in_flight(plain_server, cfg):
    draft = load_lm(resolve(None, "draft"), device="cpu")
    always_target = cfg.merged(tau=1.5)  # every step falls back to the endpoint
    remote = SpecGuard(draft, EndpointTarget(plain_server.url, TARGET_NAME), always_target)
    items = _items(2)
    serial = [remote.generate(it.prompt).text for it in items]
    with ThreadPoolExecutor(len(items)) as pool:
        parallel = list(pool.map(lambda it: remote.generate(it.prompt).text, items))
    assert parallel == serial
    assert plain_server.health()["max_running"] >= 2


def test_unreachable_server_is_named_and_the_engine_recovers(local, cfg):
    port = _free_port()  # nothing listens here
    draft = load_lm(resolve(None, "draft"), device="cpu")
    target = EndpointTarget(f"http://127.0.0.1:{port}", TARGET_NAME, max_retries=1, timeout=2)
    engine = SpecGuard(draft, target, cfg.merged(tau=1.5))
    prompt = _items(1)[0].prompt
    with pytest.raises(EndpointUnreachable, match=rf"127\.0\.0\.1:{port}.*2 attempts"):
        engine.generate(prompt)
    # the failed call left nothing behind: the local engine on the same draft still agrees
    assert local.generate(prompt).text == local.generate(prompt).text


def test_malformed_answers_and_client_errors_raise_endpoint_error(plain_server, cfg):
    target = EndpointTarget(plain_server.url, "no-such-model", max_retries=0)
    draft = load_lm(resolve(None, "draft"), device="cpu")
    with pytest.raises(EndpointError, match=r"404.*no-such-model"):
        SpecGuard(draft, target, cfg.merged(tau=1.5)).generate(_items(1)[0].prompt)

    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"txt": 1}]})

    bad = EndpointTarget("http://example.invalid", TARGET_NAME, max_retries=0)
    bad.http._client = httpx.Client(transport=httpx.MockTransport(garbage))
    with pytest.raises(EndpointError, match="malformed data"):
        SpecGuard(draft, bad, cfg.merged(tau=1.5)).generate(_items(1)[0].prompt)


def test_endpoint_draft_runs_confidence_only(plain_server, local, cfg):
    engine = SpecGuard(EndpointDraft(plain_server.url, TARGET_NAME), local.target, cfg)
    result = engine.generate(_items(1)[0].prompt)
    assert result.steps
    assert all(s.signals == "confidence_only" and s.grounding is None for s in result.steps)
    assert all(s.confidence <= 0.0 for s in result.steps)
    # k > 1 samples n candidates in one request
    sampled = cfg.merged(k=3, temperature=0.7, seed=1)
    r = engine.generate(_items(1)[0].prompt, config=sampled)
    assert all(s.num_candidates == 3 for s in r.steps)


def test_langchain_llm_as_target(plain_server, local, cfg):
    from langchain_openai import OpenAI

    llm = OpenAI(
        base_url=plain_server.url + "/v1",
        api_key="unused",
        model=TARGET_NAME,
        temperature=0,
        max_tokens=cfg.max_step_tokens,
        max_retries=0,
    )
    draft = load_lm(resolve(None, "draft"), device="cpu")
    engine = SpecGuard(draft, LangChainTarget(llm), cfg)
    for item in _items(1):
        a, b = local.generate(item.prompt), engine.generate(item.prompt)
        assert b.text == a.text
        assert [s.source for s in b.steps] == [s.source for s in a.steps]


# ------------------------------------------------------------------ specguard serve
def test_openai_client_completions_with_step_records(sg_server, local):
    from openai import OpenAI

    client = OpenAI(base_url=sg_server.url + "/v1", api_key="unused", max_retries=0)
    item = _items(1)[0]
    resp = client.completions.create(model="specguard", prompt=item.prompt, max_tokens=160)
    ext = resp.model_extra["specguard"]
    expected = local.generate(item.prompt)
    assert resp.choices[0].text == expected.text
    assert [s["source"] for s in ext["steps"]] == [s.source for s in expected.steps]
    assert ext["summary"]["target_steps"] == expected.target_steps
    assert resp.usage.completion_tokens == expected.output_tokens
    assert resp.choices[0].finish_reason == "stop"

    chunks = list(
        client.completions.create(
            model="specguard", prompt=item.prompt, max_tokens=160, stream=True
        )
    )
    steps = [
        c.model_extra["specguard"]["step"]
        for c in chunks
        if "step" in (c.model_extra or {}).get("specguard", {})
    ]
    assert "".join(c.choices[0].text for c in chunks) == expected.text
    assert len(steps) == expected.num_steps
    assert all({"grounding", "confidence", "fused", "decision"} <= set(s) for s in steps)


def test_chat_openai_against_the_server(sg_server):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        base_url=sg_server.url + "/v1", api_key="unused", model="specguard", max_retries=0
    )
    q = make_split("arithmetic", "test", 1)[0].prompt
    msg = model.invoke(q)
    assert msg.content and msg.usage_metadata["output_tokens"] > 0
    streamed = "".join(c.content for c in model.stream(q))
    assert streamed == msg.content

    @tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        return str(eval(expression))

    bound = model.bind_tools([calculator], tool_choice="calculator")
    reply = bound.invoke("What is 17 * 23? Use the calculator.")
    calls = reply.tool_calls + reply.invalid_tool_calls
    assert calls and calls[0]["name"] == "calculator"


def test_bad_requests_get_4xx_and_the_server_keeps_serving(sg_server):
    url = sg_server.url
    post = lambda path, **kw: httpx.post(url + path, timeout=30, **kw)  # noqa: E731
    r = post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = post("/v1/completions", json={"model": "gpt-9", "prompt": "hi"})
    assert r.status_code == 404 and "gpt-9" in r.json()["error"]["message"]
    r = post("/v1/completions", json={"model": "specguard", "prompt": "x" * 30000})
    assert r.status_code == 413
    r = post("/v1/completions", json={"model": "specguard", "prompt": "12 + 7 = 19. " * 400})
    assert r.status_code == 400 and "context window" in r.json()["error"]["message"]
    for bad in ({"temperature": 5}, {"n": 0}, {"stop": [""]}, {"max_tokens": -1}, {"prompt": 3}):
        body = {"model": "specguard", "prompt": "hi", **bad}
        r = post("/v1/completions", json=body)
        assert r.status_code == 400, bad
        assert r.json()["error"]["message"]
    r = post("/v1/chat/completions", json={"model": "specguard", "messages": []})
    assert r.status_code == 400
    r = post("/v1/completions", json={"model": "specguard", "prompt": "hi", "logprobs": 1})
    assert r.status_code == 400 and "logprobs" in r.json()["error"]["message"]
    assert httpx.get(url + "/v1/nowhere").status_code == 404
    ok = post("/v1/completions", json={"model": "specguard", "prompt": _items(1)[0].prompt})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"]


def test_queue_bound_answers_503_and_nothing_is_lost(sg_server):
    body = {"model": "specguard", "prompt": _items(1)[0].prompt, "max_tokens": 160}
    with ThreadPoolExecutor(10) as pool:
        codes = list(
            pool.map(
                lambda _: httpx.post(sg_server.url + "/v1/completions", json=body, timeout=60),
                range(10),
            )
        )
    ok = [r for r in codes if r.status_code == 200]
    busy = [r for r in codes if r.status_code == 503]
    assert len(ok) + len(busy) == 10 and ok and busy
    assert all("busy" in r.json()["error"]["message"] for r in busy)
    assert len({r.json()["choices"][0]["text"] for r in ok}) == 1  # greedy: same answer


def test_sigterm_finishes_the_in_flight_request():
    srv = Server("--mode", "plain", "--grace", "20")
    body = {
        "model": TARGET_NAME,
        "prompt": _items(1)[0].prompt,
        "max_tokens": 400,
        "stream": True,
        "stop": ["@@@"],
        "temperature": 0.9,
        "seed": 3,
    }
    lines: list[str] = []
    arrived: list[float] = []
    started = threading.Event()

    def consume() -> None:
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    arrived.append(time.monotonic())
                    started.set()

    t = threading.Thread(target=consume)
    t.start()
    assert started.wait(60)
    srv.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    t.join(60)
    assert srv.proc.wait(60) == 0
    assert lines[-1] == "data: [DONE]"
    assert arrived[-1] > signalled  # the response went on streaming after the signal
    final = json.loads(lines[-2][len("data: ") :])
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + "/health", timeout=2)


def test_endpoint_target_chat_api_continues_the_assistant_turn(plain_server, cfg):
    draft = load_lm(resolve(None, "draft"), device="cpu")
    target = EndpointTarget(plain_server.url, TARGET_NAME, api="chat")
    result = SpecGuard(draft, target, cfg.merged(tau=1.5)).generate(_items(1)[0].prompt)
    assert result.target_steps == result.num_steps >= 2
    assert result.finish_reason in ("final_answer", "eos")
    # each request continued the text so far: the steps concatenate into one reply
    assert "".join(s.text for s in result.steps) == result.text


def test_langchain_chat_model_as_target_gets_the_prefix_and_the_stop():
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    full = "2 + 3 = 5\n\n5 * 4 = 20\n\nAnswer: 20\n"
    seen = []

    class Scripted(BaseChatModel):
        """Continues a fixed solution from the AI prefix it is sent, honouring `stop`."""

        @property
        def _llm_type(self) -> str:
            return "scripted"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append((messages, stop))
            assert isinstance(messages[0], HumanMessage)
            prefix = messages[1].content if len(messages) > 1 else ""
            assert full.startswith(prefix)
            rest = full[len(prefix) :]
            cut = min([rest.find(s) for s in stop or [] if s in rest] or [len(rest)])
            msg = AIMessage(
                rest[:cut],
                usage_metadata={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
            )
            return ChatResult(generations=[ChatGeneration(message=msg)])

    draft = load_lm(resolve(None, "draft"), device="cpu")
    engine = SpecGuard(
        draft, LangChainTarget(Scripted()), SpecGuardConfig.greedy(tau=1.5, max_step_tokens=48)
    )
    result = engine.generate("Question: Tim has 2 and gets 3, then has 4 times as many.\n")
    assert result.text == full
    assert [s.text for s in result.steps] == ["2 + 3 = 5\n\n", "5 * 4 = 20\n\n", "Answer: 20\n"]
    assert all(stop == ["\n\n"] for _, stop in seen)
    assert [len(m) for m, _ in seen] == [1, 2, 2]  # the steps so far go back as the AI prefix
    assert result.prompt_tokens == 7 and all(s.num_tokens == 3 for s in result.steps)


def test_a_constrained_step_sent_to_specguard_serve_is_checked_not_refused(plain_server, cfg):
    """`specguard serve --mode plain` is read as its own profile: a constrained step is sent
    without a grammar field it would refuse (400), and its text is checked here."""
    from specguard_integrations.constraint import Constraint
    from specguard_integrations.errors import EndpointReplyError

    draft = load_lm(resolve(None, "draft"), device="cpu")
    remote = EndpointTarget(plain_server.url, TARGET_NAME, engine="auto")
    engine = SpecGuard(draft, remote, cfg.merged(tau=1.5, max_new_tokens=24))
    prompt = "Question: What is 3 + 4?\n"
    anything = engine.generate(prompt, constraint=Constraint.regex("(?s:.+)"))
    assert anything.text and remote.profile.name == "specguard"
    with pytest.raises(EndpointReplyError, match="breaks the regex constraint"):
        engine.generate(prompt, constraint=Constraint.regex("[0-9]+"))

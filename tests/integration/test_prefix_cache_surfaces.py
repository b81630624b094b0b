"""The prefix cache on the bundled pair, seen where each ecosystem looks for it: an agent's next
turn (the same system prompt and history plus one user turn) reports the tokens it read from the
cache in LangChain's `usage_metadata["input_token_details"]["cache_read"]`, LlamaIndex's
`additional_kwargs`, the step summary, a trace file, and `specguard serve`'s
`usage.prompt_tokens_details.cached_tokens` as the `openai` SDK reads it; and the answer is the
one the same call gives with the cache off."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from specguard_integrations import SpecGuardConfig
from specguard_integrations.registry import load_pair

SYSTEM = (
    "You are a careful assistant. Solve each problem in short steps, one per line, and end"
    " with a line that starts with 'Answer:'. "
) * 2  # the bundled pair reads 512 tokens at most
FIRST = "What is 12 + 30?"
SECOND = "And what is 7 * 6?"


@pytest.fixture(scope="module")
def engine():
    return load_pair(None, None)


def test_langchain_reports_the_cache_and_answers_alike(engine):
    from langchain_core.messages import HumanMessage, SystemMessage

    from specguard_integrations.langchain import ChatSpecGuard

    for lm in engine.local_models():
        lm.prefix_cache.clear()
    on = ChatSpecGuard(engine=engine, config=engine.config.merged(prefix_cache_bytes=1 << 28))
    off = ChatSpecGuard(engine=engine, config=engine.config.merged(prefix_cache_bytes=0))
    history = [SystemMessage(SYSTEM), HumanMessage(FIRST)]
    answers = []
    for chat in (on, off):
        first = chat.invoke(history)
        second = chat.invoke([*history, first, HumanMessage(SECOND)])
        answers.append((first, second))
    (on1, on2), (off1, off2) = answers
    assert (on1.content, on2.content) == (off1.content, off2.content)
    assert off2.usage_metadata["input_token_details"]["cache_read"] == 0
    summary = on2.response_metadata["specguard"]
    assert summary["draft_cached_tokens"] > len(SYSTEM) // 8  # the system prompt, at least
    read = on2.usage_metadata["input_token_details"]["cache_read"]
    assert read == summary["cached_tokens"] and 0 <= read <= on2.usage_metadata["input_tokens"]


def test_llama_index_reports_the_cache(engine):
    from llama_index.core.base.llms.types import ChatMessage

    from specguard_integrations.llama_index import SpecGuardLLM

    llm = SpecGuardLLM(engine=engine, config=engine.config.merged(prefix_cache_bytes=1 << 28))
    msgs = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=FIRST)]
    first = llm.chat(msgs)
    second = llm.chat([*msgs, first.message, ChatMessage(role="user", content=SECOND)])
    extra = second.additional_kwargs
    assert extra["specguard"]["draft_cached_tokens"] > 0
    assert extra["cached_tokens"] == extra["specguard"]["cached_tokens"]


def test_a_trace_carries_the_cached_tokens(engine, tmp_path):
    from langchain_core.messages import HumanMessage, SystemMessage

    from specguard_integrations.langchain import ChatSpecGuard
    from specguard_integrations.tracing import read_trace
    from specguard_integrations.tracing.langchain import SpecGuardTraceHandler

    path = tmp_path / "trace.jsonl"
    chat = ChatSpecGuard(engine=engine, config=engine.config.merged(prefix_cache_bytes=1 << 28))
    history = [SystemMessage(SYSTEM), HumanMessage(FIRST)]
    first = chat.invoke(history)
    tracer = SpecGuardTraceHandler(str(path))
    chat.invoke([*history, first, HumanMessage(SECOND)], config={"callbacks": [tracer]})
    (run,) = read_trace(path)
    assert run.summary["draft_cached_tokens"] > 0 and "cached_tokens" in run.summary


@pytest.fixture(scope="module")
def server(engine):
    import uvicorn

    from specguard_integrations.server import Limits, create_app
    from specguard_integrations.server.served import SpecGuardServed

    cfg = engine.config.merged(prefix_cache_bytes=1 << 28)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(SpecGuardServed(engine, cfg), Limits())
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/health", timeout=0.5)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(10)


def test_serve_reports_cached_tokens_to_the_openai_sdk(server):
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="none")
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": FIRST}]
    first = client.chat.completions.create(model="specguard", messages=msgs)
    assert first.usage.prompt_tokens_details is not None
    answer = {"role": "assistant", "content": first.choices[0].message.content}
    second = client.chat.completions.create(
        model="specguard", messages=[*msgs, answer, {"role": "user", "content": SECOND}]
    )
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    assert 0 <= details.cached_tokens <= second.usage.prompt_tokens
    stream = client.chat.completions.create(
        model="specguard",
        messages=[*msgs, answer, {"role": "user", "content": SECOND}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in stream if c.usage is not None]
    assert usage and usage[-1].prompt_tokens_details is not None


def test_the_off_switch_is_one_parameter():
    assert SpecGuardConfig(prefix_cache_bytes=0).prefix_cache_bytes == 0
    with pytest.raises(ValueError, match="prefix_cache_bytes"):
        SpecGuardConfig(prefix_cache_bytes=-1)

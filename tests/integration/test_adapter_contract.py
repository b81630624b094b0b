"""What a LangChain or LlamaIndex user meets in the first hour, on the bundled pair and on tiny
models saved to disk: content without special tokens, the models that ran named in metadata,
stops as given, empty input refused alike, tool misuse caught, traces of streamed calls and
agents, invoke equal to the joined stream, and the reasoning split."""

from __future__ import annotations

import asyncio
import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.instrumentation import get_dispatcher

from specguard_integrations.langchain import ChatSpecGuard
from specguard_integrations.langchain import SpecGuardLLM as LangChainLLM
from specguard_integrations.llama_index import SpecGuardLLM
from specguard_integrations.registry import load_pair
from specguard_integrations.tasks import make_split
from specguard_integrations.tracing import read_trace
from specguard_integrations.tracing.llama_index import SpecGuardTraceEventHandler

ODD = [
    "Question: What is the capital of France?\n",
    "Write a poem about the sea.",
    "Question: What is 14 + 9?\n",
]


@pytest.fixture(scope="module")
def engine():
    return load_pair(None, None, device="cpu")


@pytest.fixture(scope="module")
def special(engine):
    return engine.target.lm.special_texts


def _clean(text, special):
    return not any(tok in text for tok in special)


def test_no_special_token_reaches_content(engine, special):
    chat, llm = ChatSpecGuard(engine=engine), SpecGuardLLM(engine=engine)
    for prompt in ODD:
        msg = chat.invoke(prompt)
        assert _clean(msg.content, special), msg.content
        assert _clean("".join(str(c.content) for c in chat.stream(prompt)), special)
        assert _clean(llm.chat([ChatMessage(role="user", content=prompt)]).message.content, special)
        assert _clean(llm.complete(prompt).text, special)
        assert _clean(LangChainLLM(engine=engine).invoke(prompt), special)


def test_the_models_that_ran_are_named(tmp_path):
    from specguard_integrations.testing import tiny_lm

    for name, seed in (("d", 1), ("t", 2)):
        lm = tiny_lm(seed=seed)
        lm.model.save_pretrained(tmp_path / name)
        lm.tokenizer.save_pretrained(tmp_path / name)
    draft, target = str(tmp_path / "d"), str(tmp_path / "t")
    chat = ChatSpecGuard(draft=draft, model=target, max_tokens=8, device="cpu")
    msg = chat.invoke("hello")
    meta = msg.response_metadata
    assert meta["model_name"] == target and chat._get_ls_params()["ls_model_name"] == target
    assert meta["specguard"]["draft_model"] == draft and meta["specguard"]["target_model"] == target
    with pytest.raises(ValueError, match=r"runs .*construct another"):
        chat.invoke("hello", model="Qwen/Qwen2.5-7B-Instruct")
    li = SpecGuardLLM(draft=draft, model_name=target, max_new_tokens=8, device="cpu")
    assert li.metadata.model_name == target
    assert li.complete("hello").additional_kwargs["specguard"]["draft_model"] == draft


def test_a_stop_string_is_one_stop_everywhere(engine):
    item = make_split("tools", "test", 1)[0]  # ReAct text: "Thought: ...\nAction: ..."
    free = engine.generate(item.prompt).text
    assert "Action" in free
    as_string = engine.generate(item.prompt, stop="Action").text
    assert as_string == engine.generate(item.prompt, stop=["Action"]).text
    assert as_string == free[: free.find("Action")]
    assert as_string  # not cut at the first "A", "c", "t" ... of a split string
    assert LangChainLLM(engine=engine).invoke(item.prompt, stop="Action") == as_string
    li = SpecGuardLLM(engine=engine)
    assert li.complete(item.prompt, stop=["Action"]).text == as_string
    with pytest.raises(TypeError, match=r"stop\[0\] must be a string"):
        engine.generate(item.prompt, stop=[5])
    with pytest.raises(ValueError, match="unsupported call arguments \\['foo'\\]"):
        li.complete(item.prompt, top_p=0.1, foo=1)
    assert li.complete(item.prompt, top_p=0.1, max_new_tokens=4).text  # known names apply


def test_empty_input_is_refused_on_every_surface(engine):
    chat, li = ChatSpecGuard(engine=engine), SpecGuardLLM(engine=engine)
    for call in (
        lambda: chat.invoke(""),
        lambda: chat.invoke([HumanMessage("  ")]),
        lambda: li.chat([ChatMessage(role="user", content=None)]),
        lambda: li.chat([ChatMessage(role="user", content="")]),
    ):
        with pytest.raises(ValueError, match=r"messages\[0\]: the user message is empty"):
            call()
    with pytest.raises(ValueError, match="prompt is empty"):
        li.complete(" ")
    with pytest.raises(ValueError, match="prompt is empty"):
        LangChainLLM(engine=engine).invoke("")
    image = ChatMessage(role="user", blocks=[ImageBlock(url="http://x/y.png")])
    with pytest.raises(ValueError, match="unsupported content block of type 'image'"):
        li.chat([image])
    mixed = ChatMessage(role="user", blocks=[TextBlock(text="hi"), ImageBlock(url="http://x")])
    with pytest.raises(ValueError, match="text only"):
        li.chat([mixed])


def test_tool_misuse_is_caught_where_it_happens(engine):
    chat = ChatSpecGuard(engine=engine)
    bad = {"type": "function", "function": {"name": "f", "parameters": "notadict"}}
    with pytest.raises(ValueError, match="parameters must be a JSON schema"):
        chat.bind_tools([bad])
    orphan = [HumanMessage("add 1 and 2"), ToolMessage("3", tool_call_id="c1")]
    with pytest.raises(ValueError, match=r"messages\[1\]: tool message .* no earlier tool call"):
        chat.invoke(orphan)
    li = SpecGuardLLM(engine=engine)
    orphan_li = [
        ChatMessage(role="user", content="add"),
        ChatMessage(role=MessageRole.TOOL, content="3", additional_kwargs={"tool_call_id": "c1"}),
    ]
    with pytest.raises(ValueError, match="no earlier tool call"):
        li.chat(orphan_li)

    def mul(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    # a call to a tool that is not bound is an invalid call, never a tool call
    history = [
        HumanMessage("what is 2 * 3"),
        AIMessage("", tool_calls=[{"name": "mul", "args": {"a": 2, "b": 3}, "id": "c1"}]),
        ToolMessage("6", tool_call_id="c1"),
    ]
    msg = chat.bind_tools([mul]).invoke(history)
    assert all(tc["name"] == "mul" for tc in msg.tool_calls)


def test_streamed_llama_index_calls_keep_their_span_and_agents_are_traced(engine, tmp_path):
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    from specguard_integrations.cli import main
    from specguard_integrations.tasks.base import calculator as evaluate

    path = tmp_path / "agent.jsonl"
    handler = SpecGuardTraceEventHandler(path=str(path))
    get_dispatcher().add_event_handler(handler)
    try:
        llm = SpecGuardLLM(engine=engine)
        list(llm.stream_chat([ChatMessage(role="user", content=ODD[2])]))
        list(llm.stream_complete(ODD[2]))

        async def astream():
            async for _ in await llm.astream_chat([ChatMessage(role="user", content=ODD[2])]):
                pass

        asyncio.run(astream())
        direct = len(handler.runs)

        def calculator(expression: str) -> str:
            """Evaluate a + b, a - b or a * b with integers."""
            return evaluate(expression)

        async def run_agent():
            agent = FunctionAgent(tools=[FunctionTool.from_defaults(calculator)], llm=llm)
            return await agent.run(user_msg=make_split("tools", "test", 1)[0].prompt)

        asyncio.run(run_agent())
    finally:
        get_dispatcher().event_handlers.remove(handler)
    runs = read_trace(path)
    assert direct == 3 and len(runs) == len(handler.runs) >= 5  # 3 + an agent's 2+ LLM calls
    assert all(r.run_id != "no-span" and r.ended_at is not None and r.steps for r in runs)
    assert len({r.run_id for r in runs}) == len(runs)  # one run per LLM call
    assert main(["trace", "view", str(path), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").read_text().count('class="step"') == sum(
        len(r.steps) for r in runs
    )


def test_invoke_equals_the_joined_stream(engine):
    chat, lc_llm, li = (
        ChatSpecGuard(engine=engine),
        LangChainLLM(engine=engine),
        SpecGuardLLM(engine=engine),
    )
    for prompt in [*ODD, make_split("arithmetic", "test", 1)[0].prompt]:
        msg = chat.invoke(prompt)
        assert msg.content == msg.content.strip()
        assert "".join(str(c.content) for c in chat.stream(prompt)) == msg.content
        assert "".join(lc_llm.stream(prompt)) == lc_llm.invoke(prompt)
        whole = li.chat([ChatMessage(role="user", content=prompt)]).message.content
        parts = list(li.stream_chat([ChatMessage(role="user", content=prompt)]))
        assert "".join(p.delta for p in parts) == whole == parts[-1].message.content
        done = li.complete(prompt).text
        assert "".join(p.delta for p in li.stream_complete(prompt)) == done


def test_reasoning_goes_apart_from_the_answer(engine):
    prompt = make_split("arithmetic", "test", 1)[0].prompt
    plain = ChatSpecGuard(engine=engine).invoke(prompt)
    split = ChatSpecGuard(engine=engine, reasoning=True)
    msg = split.invoke(prompt)
    reasoning = msg.additional_kwargs["reasoning_content"]
    assert msg.content.startswith("Answer:") and reasoning and "Answer:" not in reasoning
    assert reasoning + "\n\n" + msg.content == plain.content  # nothing lost, nothing added
    chunks = list(split.stream(prompt))
    assert "".join(str(c.content) for c in chunks) == msg.content
    assert "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks) == reasoning
    li = SpecGuardLLM(engine=engine, reasoning=True).chat(
        [ChatMessage(role="user", content=prompt)]
    )
    assert li.message.content == msg.content
    assert li.additional_kwargs["reasoning_content"] == reasoning
    assert li.message.blocks[0].block_type == "thinking"


def test_server_reasoning_field(engine):
    from starlette.testclient import TestClient

    from specguard_integrations.server import create_app
    from specguard_integrations.server.served import SpecGuardServed

    client = TestClient(create_app(SpecGuardServed(engine, engine.config, reasoning=True)))
    prompt = make_split("arithmetic", "test", 1)[0].prompt
    body = {"model": "specguard", "messages": [{"role": "user", "content": prompt}]}
    message = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    assert message["content"].startswith("Answer:") and message["reasoning_content"]
    r = client.post("/v1/chat/completions", json={**body, "stream": True})
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"]
        for line in r.text.split("\n")
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    ]
    assert "".join(d.get("content", "") for d in deltas) == message["content"]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message["reasoning_content"]

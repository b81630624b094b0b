"""LangChain adapters on a tiny random pair: plumbing, metadata, events, runs.

Behaviour that needs a model that can reason or call tools is tested on the bundled pair.
"""

import asyncio

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tracers.base import BaseTracer

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.langchain import ChatSpecGuard, SpecGuardLLM, SpecGuardReasoningChain
from specguard_integrations.testing import tiny_lm


@pytest.fixture(scope="module")
def engine():
    return SpecGuard(
        tiny_lm("llama", seed=1),
        tiny_lm("llama", seed=2),
        SpecGuardConfig(k=2, max_step_tokens=6, max_new_tokens=24, segmenter="newline"),
    )


class Events(BaseCallbackHandler):
    def __init__(self):
        self.steps = []

    def on_custom_event(self, name, data, *, run_id, **kw):
        self.steps.append((name, data, run_id))


class Runs(BaseTracer):
    def __init__(self):
        super().__init__()
        self.runs = []

    def _persist_run(self, run):
        self.runs.append(run)


def test_invoke_metadata_usage_and_one_event_per_step(engine):
    events = Events()
    msg = ChatSpecGuard(engine=engine).invoke("hello", config={"callbacks": [events]})
    meta = msg.response_metadata
    steps = meta["specguard_steps"]
    assert meta["model_provider"] == "specguard" and meta["model_name"] == "tiny-llama-2"
    assert meta["finish_reason"] in ("stop", "length")
    assert meta["specguard"]["num_steps"] == len(steps) >= 1
    assert all("index" not in s and s["source"] in ("draft", "target") for s in steps)
    usage = msg.usage_metadata
    details = usage["output_token_details"]
    assert usage["output_tokens"] == details["draft"] + details["target"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert [d["step_index"] for _, d, _ in events.steps] == [s["step_index"] for s in steps]
    assert {n for n, _, _ in events.steps} == {"specguard_step"}


def test_stream_batch_and_async_agree_with_invoke(engine):
    llm = ChatSpecGuard(engine=engine)
    text = llm.invoke("hello").content
    chunks = list(llm.stream("hello"))
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    assert full.content == text
    assert full.usage_metadata["output_tokens"] > 0
    assert [m.content for m in llm.batch(["hello", "hello"])] == [text, text]
    assert asyncio.run(llm.ainvoke("hello")).content == text

    async def collect():
        return [c async for c in llm.astream("hello")]

    achunks = asyncio.run(collect())
    assert "".join(c.content for c in achunks) == text
    assert [m.content for m in asyncio.run(llm.abatch(["hello"]))] == [text]


def test_astream_events_carry_step_events(engine):
    llm = ChatSpecGuard(engine=engine)

    async def collect():
        return [e async for e in llm.astream_events("hello", version="v2")]

    events = asyncio.run(collect())
    custom = [e for e in events if e["event"] == "on_custom_event"]
    end = next(e for e in events if e["event"] == "on_chat_model_end")
    steps = end["data"]["output"].response_metadata["specguard_steps"]
    assert [e["data"]["step_index"] for e in custom] == [s["step_index"] for s in steps]
    assert all(e["name"] == "specguard_step" and e["run_id"] == end["run_id"] for e in custom)


def test_stop_sequence_and_parameters(engine):
    llm = ChatSpecGuard(engine=engine)
    text = llm.invoke("hello").content
    stop = text[3:5]
    assert llm.invoke("hello", stop=[stop]).content == text[: text.index(stop)].strip()
    short = llm.invoke("hello", max_tokens=3)
    assert short.usage_metadata["output_tokens"] <= 3
    assert short.response_metadata["finish_reason"] == "length"
    params = llm._get_ls_params(stop=["x"], max_tokens=5)
    assert params["ls_provider"] == "specguard" and params["ls_max_tokens"] == 5
    assert params["ls_stop"] == ["x"]
    # the traced stops are the ones the call runs with: one string is one stop, an explicit
    # empty list clears the object's, a bad value is refused by name
    stopping = ChatSpecGuard(engine=engine, stop=["END"])
    assert stopping._get_ls_params()["ls_stop"] == ["END"]
    assert stopping._get_ls_params(stop="ab")["ls_stop"] == ["ab"]
    assert "ls_stop" not in stopping._get_ls_params(stop=[])
    with pytest.raises(TypeError, match=r"stop\[0\] must be a string"):
        stopping._get_ls_params(stop=[3])
    greedy = llm.invoke("hello", temperature=0.0)
    assert all(s["num_candidates"] == 1 for s in greedy.response_metadata["specguard_steps"])
    with pytest.raises(ValueError, match="unsupported call arguments"):
        llm.invoke("hello", frobnicate=1)


def test_message_history_with_tool_messages_is_rendered(engine):
    llm = ChatSpecGuard(engine=engine)
    history = [
        SystemMessage("be brief"),
        HumanMessage("add 1 and 2"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}]),
        ToolMessage("3", tool_call_id="c1"),
    ]
    msg = llm.invoke(history)
    assert isinstance(msg, AIMessage)
    with pytest.raises(
        ValueError, match=r"messages\[0\]: unsupported content block of type .image_url."
    ):
        llm.invoke([HumanMessage(content=[{"type": "image_url", "image_url": {"url": "x"}}])])


def test_forced_tool_call_from_a_random_model_is_parsed_or_invalid(engine):
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    msg = ChatSpecGuard(engine=engine).bind_tools([add], tool_choice="add").invoke("add 1 and 2")
    calls = msg.tool_calls + msg.invalid_tool_calls
    assert len(calls) == 1 and calls[0]["name"] == "add"


def test_structured_output_cut_by_the_budget_raises_or_reports(engine):
    """A forced call cut by max_tokens is no structured output: the parser raises naming why,
    and with include_raw the error is reported beside the raw message."""
    from langchain_core.exceptions import OutputParserException
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    chat = ChatSpecGuard(engine=engine, max_tokens=3)
    for schema, method in ((Person, "function_calling"), (None, "json_mode")):
        with pytest.raises(OutputParserException, match="no structured output"):
            chat.with_structured_output(schema, method=method).invoke("Alice is 30.")
    out = chat.with_structured_output(Person, include_raw=True).invoke("Alice is 30.")
    assert out["parsed"] is None and isinstance(out["parsing_error"], OutputParserException)
    assert out["raw"].invalid_tool_calls and not out["raw"].tool_calls


def test_llm_and_reasoning_chain(engine):
    events, runs = Events(), Runs()
    llm = SpecGuardLLM(engine=engine)
    out = llm.generate(["hello"], callbacks=[events])
    info = out.generations[0][0].generation_info
    assert len(info["specguard_steps"]) == len(events.steps) >= 1
    assert "".join(c for c in llm.stream("hello")) == llm.invoke("hello")

    chain = SpecGuardReasoningChain(engine=engine)
    result = chain.invoke({"question": "What is 2 + 2?"}, config={"callbacks": [runs]})
    assert set(result) == {"answer", "text", "steps", "summary"}
    (root,) = runs.runs
    assert [c.name for c in root.child_runs] == [
        f"specguard_step_{s['step_index']}" for s in result["steps"]
    ]
    assert root.child_runs[0].outputs["fused"] == result["steps"][0]["fused"]
    streamed = list(chain.stream("What is 2 + 2?"))
    assert sum(len(c.get("steps", [])) for c in streamed) == len(result["steps"])
    assert asyncio.run(chain.ainvoke("What is 2 + 2?"))["text"] == result["text"]
    composed = chain | (lambda r: r["summary"]["num_steps"])
    assert composed.invoke("What is 2 + 2?") == len(result["steps"])
    with pytest.raises(ValueError, match="question"):
        chain.invoke({"q": "x"})

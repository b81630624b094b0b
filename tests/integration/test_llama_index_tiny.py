"""LlamaIndex adapter on a tiny random pair: plumbing, events inside the call's span."""

import asyncio

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.llama_index import SpecGuardLLM, SpecGuardStepEvent
from specguard_integrations.testing import tiny_lm


class StepEvents(BaseEventHandler):
    events: list = []  # noqa: RUF012 - a pydantic field, set per instance

    @classmethod
    def class_name(cls) -> str:
        return "StepEvents"

    def handle(self, event, **kwargs):
        if isinstance(event, SpecGuardStepEvent):
            self.events.append(event)


@pytest.fixture(scope="module")
def llm():
    engine = SpecGuard(
        tiny_lm("llama", seed=1),
        tiny_lm("llama", seed=2),
        SpecGuardConfig(k=2, max_step_tokens=6, max_new_tokens=20, segmenter="newline"),
    )
    return SpecGuardLLM(engine=engine)


@pytest.fixture
def handler():
    root = get_dispatcher()
    h = StepEvents(events=[])
    root.add_event_handler(h)
    yield h
    root.event_handlers.remove(h)


def test_metadata_describes_the_models(llm):
    meta = llm.metadata
    assert meta.is_chat_model and meta.is_function_calling_model
    assert meta.context_window == 512 and meta.num_output == 20
    assert meta.model_name == "tiny-llama-2"


def test_one_step_event_per_step_inside_the_call_span(llm, handler):
    spans = SimpleSpanHandler()
    get_dispatcher().add_span_handler(spans)
    try:
        resp = llm.complete("hello")
    finally:
        get_dispatcher().span_handlers.remove(spans)
    steps = resp.additional_kwargs["specguard_steps"]
    assert [e.record["step_index"] for e in handler.events] == [s["step_index"] for s in steps]
    assert all(e.record["fused"] == s["fused"] for e, s in zip(handler.events, steps, strict=True))
    span_ids = {e.span_id for e in handler.events}
    assert len(span_ids) == 1 and next(iter(span_ids)).startswith("SpecGuardLLM.complete")
    assert any(s.id_ == next(iter(span_ids)) for s in spans.completed_spans)


def test_chat_stream_and_async_agree(llm, handler):
    msgs = [ChatMessage(role="user", content="hi")]
    text = llm.chat(msgs).message.content
    streamed = list(llm.stream_chat(msgs))
    assert streamed[-1].message.content == text
    assert "".join(r.delta for r in streamed) == text
    assert asyncio.run(llm.achat(msgs)).message.content == text
    assert llm.complete("hello").text == asyncio.run(llm.acomplete("hello")).text

    async def collect():
        gen = await llm.astream_complete("hello")
        return [r async for r in gen]

    assert collect and asyncio.run(collect())[-1].text == llm.complete("hello").text


def test_tools_round_trip_through_blocks(llm):
    def add(a: int, b: int) -> int:
        """Add two ints."""
        return a + b

    tool = FunctionTool.from_defaults(add)
    resp = llm.chat_with_tools([tool], "add 1 and 2", tool_required=True)
    calls = llm.get_tool_calls_from_response(resp, error_on_no_tool_call=False)
    assert len(calls) == 1 and calls[0].tool_name == "add"
    with pytest.raises(ValueError, match="expected at least one tool call"):
        llm.get_tool_calls_from_response(llm.chat([ChatMessage(role="user", content="x")]))

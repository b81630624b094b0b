"""One row per model family (Qwen3, Llama-3.1, Gemma-3, DeepSeek-V3, Mistral-style, the bundled
pair): chat and streaming without special tokens, a forced tool call that the family's own
parser reads back, a tool-result history rendered through the family's template, LlamaIndex
chat, a `specguard serve` chat completion, and the engine's target-only invariant."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from llama_index.core.base.llms.types import ChatMessage
from starlette.testclient import TestClient

from specguard_integrations.chat import prepare_chat, tool_call_format
from specguard_integrations.langchain import ChatSpecGuard
from specguard_integrations.llama_index import SpecGuardLLM
from specguard_integrations.server import create_app
from specguard_integrations.server.served import SpecGuardServed

QUESTION = "Question: What is 12 + 30?\n"
CALL_ID = "call_abcdefghijk"  # Mistral's template keeps the last 9 characters


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _clean(row, text):
    leaked = [t for t in row.chat_lm.special_texts if t in text]
    assert not leaked, (leaked, text)


def _format(row):
    """The tool-call format to use: the template's own, or named for a template without one."""
    return row.family.tool_format or "hermes"


def test_chat_and_stream_carry_no_special_tokens(row):
    chat = ChatSpecGuard(engine=row.engine)
    msg = chat.invoke(QUESTION)
    _clean(row, msg.content)
    assert msg.response_metadata["specguard_steps"]
    streamed = "".join(str(c.content) for c in chat.stream(QUESTION))
    assert streamed == msg.content


def test_a_forced_call_is_read_back_by_the_family_parser(row):
    named = None if row.family.tool_format else "hermes"
    if row.family.tool_format is None:  # the template writes no calls: a clear error first
        with pytest.raises(ValueError, match=r"renders no tool calls.*tool_call_format="):
            ChatSpecGuard(engine=row.engine).bind_tools([add], tool_choice="add").invoke(QUESTION)
    chat = ChatSpecGuard(engine=row.engine, tool_call_format=named)
    msg = chat.bind_tools([add], tool_choice="add").invoke(QUESTION)
    calls = msg.tool_calls + msg.invalid_tool_calls
    assert len(calls) >= 1 and calls[0]["name"] == "add", msg
    _clean(row, msg.content)
    fmt = tool_call_format(row.chat_lm, named)
    assert fmt.name == _format(row)
    text = fmt.render_calls([("add", {"a": 12, "b": 30})])  # what a trained model writes
    parsed = fmt.parse(text)
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [("add", {"a": 12, "b": 30})]


def test_a_tool_result_history_is_rendered_through_the_template(row):
    named = None if row.family.tool_format else "hermes"
    history = [
        HumanMessage("Add 12 and 30."),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 12, "b": 30}, "id": CALL_ID}]),
        ToolMessage("RESULT4242", tool_call_id=CALL_ID),
    ]
    from specguard_integrations.langchain._common import to_chat_dicts

    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                },
            },
        }
    ]
    call = prepare_chat(
        row.chat_lm, to_chat_dicts(history), tools=tools, tool_call_format_name=named
    )
    assert "RESULT4242" in call.prompt and "add" in call.prompt
    msg = ChatSpecGuard(engine=row.engine, tool_call_format=named).bind_tools([add]).invoke(history)
    _clean(row, msg.content)
    assert all(c["name"] == "add" for c in msg.tool_calls)


def test_llama_index_chat(row):
    llm = SpecGuardLLM(engine=row.engine)
    reply = llm.chat([ChatMessage(role="user", content=QUESTION)])
    _clean(row, reply.message.content or "")
    assert reply.additional_kwargs["specguard_steps"]
    assert llm.metadata.model_name == row.engine.target.name


def test_server_chat_completion(row):
    named = None if row.family.tool_format else "hermes"
    served = SpecGuardServed(row.engine, row.engine.config, tool_call_format=named)
    client = TestClient(create_app(served))
    body = {"model": "specguard", "messages": [{"role": "user", "content": QUESTION}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    _clean(row, r.json()["choices"][0]["message"]["content"] or "")
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    r = client.post(
        "/v1/chat/completions", json={**body, "tools": tools, "tool_choice": "required"}
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    message = choice["message"]
    _clean(row, message["content"] or "")
    assert message.get("tool_calls"), "a forced call comes back as a call, never as text"
    for tc in message["tool_calls"]:
        assert tc["function"]["name"] == "add"
        if choice["finish_reason"] == "length":  # cut inside the call: the arguments as written
            assert isinstance(tc["function"]["arguments"], str)
        else:
            assert choice["finish_reason"] == "tool_calls"
            assert isinstance(json.loads(tc["function"]["arguments"]), dict)


def test_target_only_output_equals_the_targets_greedy_continuation(row):
    import torch

    lm = row.engine.target.lm
    prompt = row.chat_lm.render_chat([{"role": "user", "content": QUESTION}])
    cfg = row.engine.config.merged(tau=1.5, max_new_tokens=16, max_step_tokens=16)
    result = row.engine.generate(prompt, config=cfg, add_special_tokens=False)
    ids = torch.tensor([lm.encode_prompt(prompt, add_special_tokens=False)])
    with torch.inference_mode():
        out = lm.model.generate(
            ids,
            max_new_tokens=16,
            do_sample=False,
            eos_token_id=sorted(lm.eos_ids),
            pad_token_id=lm.tokenizer.pad_token_id or 0,
        )
    new = [t for t in out[0, ids.shape[1] :].tolist() if t not in lm.eos_ids]
    greedy = lm.decode(new[: lm.eos_ids and len(new)])
    assert result.text == greedy[: len(result.text)] and result.text
    assert all(s.source == "target" for s in result.steps)

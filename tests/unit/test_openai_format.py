"""The wire format as pure functions: errors, parameters named, bodies, chunks, replies."""

import json

from specguard_integrations.chat import ChatCall
from specguard_integrations.server import openai_format as fmt
from specguard_integrations.server.served import Choice, GenOutput
from specguard_integrations.tools import Hermes


def test_error_body_and_params():
    assert fmt.error_body("bad", param="n") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": None}
    }
    assert fmt.error_param(("messages", 2, "assistant", "tool_calls", 0, "id")) == (
        "messages[2].tool_calls[0].id"
    )
    assert fmt.error_param(("messages", 0, "user", "content", "list[TextPart]", 1, "type")) == (
        "messages[0].content[1].type"
    )
    assert fmt.error_param(("user",)) == "user"  # a field named like a role is still a field
    assert fmt.error_param(()) is None
    assert fmt.param_named("messages[3]: the user message is empty") == "messages[3]"
    assert fmt.param_named("tools[0] (f): parameters must be") == "tools[0]"
    assert fmt.param_named("the model said no") is None


def test_bodies_and_chunks():
    out = GenOutput(
        [Choice("hi", "stop", completion_tokens=2)], prompt_tokens=5, specguard={"x": 1}
    )
    head = {"id": "c1", "object": "text_completion", "created": 1, "model": "m"}
    choice = fmt.completion_choice(0, out.choices[0], logprobs=False)
    body = fmt.response_body(head, [choice], out)
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert body["specguard"] == {"x": 1} and body["choices"][0]["text"] == "hi"
    chunk = fmt.chunk_body(head, fmt.delta_choice(True, "a"), {"specguard": {"step": {}}})
    assert chunk["choices"][0]["delta"] == {"content": "a"} and "specguard" in chunk
    assert fmt.chunk_body(head, None)["choices"] == []  # the usage chunk
    assert fmt.sse("[DONE]") == "data: [DONE]\n\n"
    assert json.loads(fmt.sse({"a": 1})[6:]) == {"a": 1}


def test_chat_messages_parse_calls_and_drop_special_tokens():
    call = ChatCall("p", "", None, Hermes(), [{"function": {"name": "add"}}], ("<|end|>",))
    text = 'Sure.<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call><|end|>'
    message = fmt.chat_message(Choice(text, "tool_calls"), call)
    assert message["content"] == "Sure."
    (tc,) = message["tool_calls"]
    assert tc["function"] == {"name": "add", "arguments": '{"a": 1}'} and tc["id"].startswith(
        "call_"
    )
    assert fmt.chat_finish(Choice(text, "stop"), message) == "tool_calls"
    plain = fmt.chat_message(Choice("4<|end|>", "tool_calls"), call)
    assert plain == {"role": "assistant", "content": "4"}
    assert fmt.chat_finish(Choice("4", "tool_calls"), plain) == "stop"
    as_json = fmt.chat_message(Choice(text, "tool_calls"), call, json_reply=True)
    assert json.loads(as_json["content"]) == {"a": 1} and "tool_calls" not in as_json
    steps = ["2 + 2 = 4\n\n", "Answer: 4\n"]
    split = fmt.chat_message(
        Choice("".join(steps), "stop"), ChatCall("p", "", None, None), steps=steps
    )
    assert split == {"role": "assistant", "content": "Answer: 4", "reasoning_content": "2 + 2 = 4"}
    delta = fmt.final_delta(message, ("", ""))
    assert delta["tool_calls"][0]["index"] == 0 and "content" not in delta


CALC = {
    "type": "function",
    "function": {
        "name": "Calculator",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


def _reply(text: str, finish: str = "stop") -> tuple[dict, str]:
    call = ChatCall("prompt", "", None, Hermes(), [CALC])
    choice = Choice(text, finish)
    message = fmt.chat_message(choice, call)
    return message, fmt.chat_finish(choice, message)


def test_unbound_malformed_and_cut_calls_are_calls_never_markup():
    import openai.types.chat as oai
    from langchain_openai.chat_models.base import _convert_dict_to_message

    unbound = (
        'Let me use it.\n<tool_call>{"name": "calculator", "arguments": {"expression": "2*3"}}'
    )
    malformed = '<tool_call>{"name": "Calculator", "arguments": {"expression": 2*3}}'
    cases = {
        "unbound": (unbound + "</tool_call>", "stop"),
        "malformed": (malformed + "</tool_call>", "stop"),
        "cut": ('<tool_call>{"name', "length"),
    }
    for kind, (text, finish) in cases.items():
        message, reason = _reply(text, finish)
        assert "<tool_call>" not in (message["content"] or ""), kind
        assert reason == ("length" if kind == "cut" else "tool_calls"), kind
        # the official SDK reads the reply; langchain-openai turns it into a message
        parsed = oai.ChatCompletion.model_validate(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            }
        )
        (tc,) = parsed.choices[0].message.tool_calls
        ai = _convert_dict_to_message(message)
        if kind == "unbound":  # a call to a tool that is not bound keeps its name and args
            assert tc.function.name == "calculator"
            assert json.loads(tc.function.arguments) == {"expression": "2*3"}
            assert ai.tool_calls[0]["name"] == "calculator"
            assert message["content"] == "Let me use it."
        else:  # malformed or cut: the client sees an invalid call, not text
            assert ai.invalid_tool_calls and not ai.tool_calls and not ai.content
    # a valid call to a bound tool is unchanged
    message, reason = _reply(
        '<tool_call>{"name": "Calculator", "arguments": {"expression": "1"}}</tool_call>'
    )
    assert reason == "tool_calls" and message["tool_calls"][0]["function"]["name"] == "Calculator"

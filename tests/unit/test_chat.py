import pytest

from specguard_integrations.chat import (
    ToolCallFormat,
    normalise_tool_choice,
    parse_reply,
)
from specguard_integrations.testing import char_tokenizer

FMT = ToolCallFormat()
ADD = {"type": "function", "function": {"name": "add", "parameters": {"properties": {}}}}
MUL = {"type": "function", "function": {"name": "mul", "parameters": {"properties": {}}}}


def test_format_is_read_off_the_chat_template():
    fmt = ToolCallFormat.from_tokenizer(char_tokenizer())
    assert fmt.open == "<tool_call>" and fmt.close == "</tool_call>"
    # the trailing space is left to the model (BPE merges it with the next character)
    assert fmt.forced_prefix("add") == '<tool_call>{"name": "add", "arguments":'
    assert fmt.forced_prefix("") == '<tool_call>{"name": "'


def test_template_without_tools_is_a_clear_error():
    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="renders no tool calls"):
        ToolCallFormat.from_tokenizer(tok)


def test_parse_valid_and_malformed_calls():
    text = (
        'Let me add.<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
        '<tool_call>{"name": "mul", "arguments": {"a": 1,</tool_call>'
    )
    reply = parse_reply(text, FMT)
    assert reply.content == "Let me add."
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert reply.tool_calls[0]["id"].startswith("call_")
    (bad,) = reply.invalid_tool_calls
    assert bad["name"] == "mul" and "malformed tool call" in bad["error"]


def test_parse_string_arguments_and_unclosed_call():
    reply = parse_reply('<tool_call>{"name": "add", "arguments": "{\\"a\\": 3}"}</tool_call>', FMT)
    assert reply.tool_calls[0]["args"] == {"a": 3}
    cut = parse_reply('<tool_call>{"name": "add", "arguments": {"a"', FMT)
    assert not cut.tool_calls and "not closed" in cut.invalid_tool_calls[0]["error"]
    assert parse_reply("plain text", FMT).content == "plain text"


def test_tool_choice_normalisation():
    assert normalise_tool_choice("auto", [ADD]) is None
    assert normalise_tool_choice("any", [ADD]) == "add"
    assert normalise_tool_choice("required", [ADD, MUL]) == ""
    assert (
        normalise_tool_choice({"type": "function", "function": {"name": "mul"}}, [ADD, MUL])
        == "mul"
    )
    with pytest.raises(ValueError, match="not a bound tool"):
        normalise_tool_choice("div", [ADD, MUL])

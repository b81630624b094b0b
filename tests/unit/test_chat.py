"""Tool-call formats (one class per family, read off the chat template), reply parsing, and the
checks every chat surface shares."""

import json
from pathlib import Path

import pytest

from specguard_integrations.chat import ChatCall, check_messages, strip_special
from specguard_integrations.segmentation import make_segmenter
from specguard_integrations.testing import char_tokenizer
from specguard_integrations.tools import (
    DeepSeekV3,
    Hermes,
    Llama3Json,
    Mistral,
    format_by_name,
)
from specguard_integrations.tools.binding import (
    check_tools,
    keep_bound_calls,
    normalise_tool_choice,
)
from specguard_integrations.tools.templates import detect

TEMPLATES = Path(__file__).parent.parent / "fixtures" / "chat_templates"
ADD = {"type": "function", "function": {"name": "add", "parameters": {"properties": {}}}}
MUL = {"type": "function", "function": {"name": "mul", "parameters": {"properties": {}}}}
BEGIN, SEP, CEND = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"
DS_OPEN, DS_CLOSE = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"


def _tok(template: str | None = None):
    tok = char_tokenizer()
    if template is not None:
        tok.chat_template = (TEMPLATES / template).read_text()
    return tok


def test_bundled_format_is_read_off_the_chat_template():
    fmt = detect(_tok())
    assert isinstance(fmt, Hermes) and (fmt.opener, fmt.closer) == ("<tool_call>", "</tool_call>")
    # the trailing space is left to the model (BPE merges it with the next character)
    assert fmt.forced_prefix("add") == '<tool_call>{"name": "add", "arguments":'
    assert fmt.forced_prefix("") == '<tool_call>{"name": "'


@pytest.mark.parametrize(
    ("template", "cls", "forced"),
    [
        ("hermes.jinja", Hermes, '<tool_call>\n{"name": "add", "arguments":'),
        ("llama3.1_json.jinja", Llama3Json, '{"name": "add", "parameters":'),
        ("mistral.jinja", Mistral, '[TOOL_CALLS] [{"name": "add", "arguments":'),
        ("deepseekv3.jinja", DeepSeekV3, f"{DS_OPEN}{BEGIN}function{SEP}add\n```json\n"),
    ],
)
def test_each_family_is_detected_with_its_own_prefix(template, cls, forced):
    fmt = detect(_tok(template))
    assert type(fmt) is cls
    assert fmt.forced_prefix("add") == forced


def test_template_without_tool_calls_names_the_option():
    tok = _tok()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match=r"renders no tool calls.*tool_call_format="):
        detect(tok)
    assert isinstance(detect(tok, "mistral"), Mistral)  # a named format needs no template
    with pytest.raises(ValueError, match="unknown value 'pythonic'"):
        format_by_name("pythonic")


def test_hermes_parses_valid_malformed_and_unclosed_calls():
    fmt = Hermes()
    text = (
        'Let me add.<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
        '<tool_call>{"name": "mul", "arguments": {"a": 1,</tool_call>'
    )
    reply = fmt.parse(text)
    assert reply.content == "Let me add."
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert reply.tool_calls[0]["id"].startswith("call_")
    (bad,) = reply.invalid_tool_calls
    assert bad["name"] == "mul" and "malformed tool call" in bad["error"]
    args = fmt.parse('<tool_call>{"name": "add", "arguments": "{\\"a\\": 3}"}</tool_call>')
    assert args.tool_calls[0]["args"] == {"a": 3}
    cut = fmt.parse('<tool_call>{"name": "add", "arguments": {"a"')
    assert not cut.tool_calls and "not closed" in cut.invalid_tool_calls[0]["error"]


def test_llama3_json_parses_a_json_turn_and_leaves_text_alone():
    fmt = Llama3Json()
    one = fmt.parse('<|python_tag|>{"name": "add", "parameters": {"a": 1}}')
    assert [(c["name"], c["args"]) for c in one.tool_calls] == [("add", {"a": 1})]
    two = fmt.parse('{"name": "add", "parameters": {"a": 1}}; {"name": "mul", "arguments": {}}')
    assert [c["name"] for c in two.tool_calls] == ["add", "mul"] and two.content == ""
    assert fmt.parse("The answer is {not json}").content == "The answer is {not json}"
    bad = fmt.parse('{"name": "add", "parameters": {"a": ')
    assert not bad.tool_calls and bad.invalid_tool_calls[0]["name"] == "add"


def test_mistral_parses_the_call_array_after_the_marker():
    fmt = Mistral()
    reply = fmt.parse(
        'Sure. [TOOL_CALLS] [{"name": "add", "arguments": {"a": 1}, "id": "x"},'
        ' {"name": "mul", "arguments": "{\\"b\\": 2}"}]'
    )
    assert reply.content == "Sure."
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("add", {"a": 1}),
        ("mul", {"b": 2}),
    ]
    broken = fmt.parse('[TOOL_CALLS] [{"name": "add", "arguments": {')
    assert not broken.tool_calls and broken.invalid_tool_calls


def test_deepseek_parses_fenced_arguments():
    fmt = DeepSeekV3()
    text = (
        f'Checking.{DS_OPEN}{BEGIN}function{SEP}add\n```json\n{{"a": 1}}\n```{CEND}\n'
        f'{BEGIN}function{SEP}mul\n```json\n{{"b": 2}}\n```{CEND}{DS_CLOSE}'
    )
    reply = fmt.parse(text)
    assert reply.content == "Checking."
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("add", {"a": 1}),
        ("mul", {"b": 2}),
    ]
    unclosed = fmt.parse(f'{DS_OPEN}{BEGIN}function{SEP}add\n```json\n{{"a": 1}}')
    assert not unclosed.tool_calls and "not closed" in unclosed.invalid_tool_calls[-1]["error"]


@pytest.mark.parametrize("name", ["hermes", "llama3_json", "mistral", "deepseek_v3"])
def test_written_calls_parse_back_and_end_one_step(name):
    fmt = format_by_name(name)
    text = fmt.render_calls([("add", {"a": 1, "b": [2, 3]})])
    reply = fmt.parse(text)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("add", {"a": 1, "b": [2, 3]})]
    seg = make_segmenter("tool_call", ("Answer:",), name)
    # thinking before a call is a step of its own; inside a call a blank line is no boundary
    assert seg.find("Let me think.\n\n" + text).end == len("Let me think.\n\n")
    if fmt.closer:
        assert seg.find(text + "more").end == len(text)
        assert seg.stop_hints == (fmt.closer,)
    else:  # the call runs to the end of the turn
        assert seg.find(text.replace(", ", ",\n\n")) is None


def test_response_template_parses_with_transformers():
    templates = json.loads((TEMPLATES.parent / "response_templates.json").read_text())
    tok = _tok("hermes.jinja")
    tok.response_template = templates["qwen3_hermes"]
    fmt = detect(tok)
    assert fmt.name == "hermes" and fmt.response_parser is tok
    reply = fmt.parse('<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>')
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("add", {"a": 1})]


def test_calls_to_unbound_tools_are_invalid_and_special_tokens_leave_content():
    reply = Hermes().parse('<tool_call>{"name": "div", "arguments": {}}</tool_call>')
    kept = keep_bound_calls(reply, [ADD])
    assert not kept.tool_calls and "'div' is not bound" in kept.invalid_tool_calls[0]["error"]
    call = ChatCall("p", "", None, None, special=("<|assistant|>", "<|end|>"))
    assert call.parse("Paris.<|end|><|assistant|>").content == "Paris."
    assert strip_special("a<|x|>b", ("<|x|>",)) == "ab"


def test_tools_need_json_schema_parameters():
    check_tools([ADD])
    bad = {"type": "function", "function": {"name": "f", "parameters": "notadict"}}
    with pytest.raises(ValueError, match=r"tools\[0\] \(f\): parameters must be a JSON schema"):
        check_tools([bad])
    with pytest.raises(ValueError, match="needs a function with a name"):
        check_tools([{"foo": "bar"}])
    not_schema = {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": 3}}}}
    with pytest.raises(ValueError, match=r"tools\[0\] \(f\): parameters: not a JSON schema"):
        check_tools([not_schema])


@pytest.mark.parametrize("name", ['say "hi"', "two words", "tab\there", "back\\slash", "nl\n"])
def test_tool_names_a_call_cannot_write_are_refused(name):
    with pytest.raises(ValueError, match=r"tools\[1\]: name .* holds whitespace"):
        check_tools([ADD, {"type": "function", "function": {"name": name}}])


def test_a_tool_without_parameters_gets_an_empty_object_schema_on_a_copy():
    """Chat templates read ``parameters.properties`` of every tool: one without parameters (or
    without properties) gets them filled in, and the caller's dicts are left as they were."""
    given = [{"type": "function", "function": {"name": "now"}}, {"name": "bare"}]
    checked = check_tools(given)
    assert checked[0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert checked[1]["parameters"] == {"type": "object", "properties": {}}
    assert "parameters" not in given[0]["function"] and "parameters" not in given[1]


def test_calls_whose_arguments_the_schema_refuses_are_invalid():
    """A call written without a grammar (or by a remote target) can name a bound tool with the
    wrong arguments: it is an invalid call naming the argument, never passed on as valid."""
    tool = {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    }
    fits = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    assert len(keep_bound_calls(Hermes().parse(fits), [tool]).tool_calls) == 1
    for args, why in (
        ('{"a": 1}', "'b' is a required property"),
        ('{"a": "one", "b": 2}', "a: 'one' is not of type 'integer'"),
        ('{"a": 1, "b": 2, "c": 3}', "Additional properties are not allowed"),
    ):
        reply = Hermes().parse(f'<tool_call>{{"name": "add", "arguments": {args}}}</tool_call>')
        kept = keep_bound_calls(reply, [tool])
        assert not kept.tool_calls, args
        (bad,) = kept.invalid_tool_calls
        assert bad["name"] == "add" and why in bad["error"] and json.loads(bad["args"])


def test_messages_are_checked_alike_on_every_surface():
    with pytest.raises(ValueError, match="no messages"):
        check_messages([])
    with pytest.raises(ValueError, match=r"messages\[1\]: the user message is empty"):
        check_messages([{"role": "system", "content": "s"}, {"role": "user", "content": "  "}])
    orphan = [
        {"role": "user", "content": "x"},
        {"role": "tool", "content": "3", "tool_call_id": "c1"},
    ]
    with pytest.raises(ValueError, match=r"messages\[1\]: tool message .* answers no earlier"):
        check_messages(orphan)
    called = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {}}}
    check_messages(
        [orphan[0], {"role": "assistant", "content": "", "tool_calls": [called]}, orphan[1]]
    )


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


def test_without_jsonschema_required_arguments_are_still_checked(monkeypatch):
    import sys

    from specguard_integrations.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if the extra were not installed
    tool = {"name": "add", "parameters": {"type": "object", "required": ["a"]}}
    reply = Hermes().parse('<tool_call>{"name": "add", "arguments": {"b": 1}}</tool_call>')
    (bad,) = keep_bound_calls(reply, [tool]).invalid_tool_calls
    assert "missing required argument(s) 'a'" in bad["error"]
    from specguard_integrations import Constraint

    with pytest.raises(MissingDependencyError, match=r"\[grammar\] extra"):
        Constraint.json_schema({"type": "object"}).check("{}")

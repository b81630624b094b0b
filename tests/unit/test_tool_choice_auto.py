"""tool_choice="auto" under a grammar: free text, or text up to the call opener and then one
valid call to a bound tool; an opener that is one of the model's tokens is named by its id."""

import pytest

from specguard_integrations.constraint.text import TextChecker
from specguard_integrations.tools import DeepSeekV3, Hermes, Llama3Json, Mistral
from specguard_integrations.tools.grammar import auto_call

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "Calculator",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
]


def verdict(fmt, text):
    constraint, left = auto_call(fmt, TOOLS)
    checker = TextChecker(constraint)
    return checker.follow(text), checker.complete, left


@pytest.mark.parametrize(
    ("fmt", "call"),
    [
        (
            Hermes(),
            '<tool_call>{"name": "Calculator", "arguments": {"expression": "2*3"}}</tool_call>',
        ),
        (Hermes(), '<tool_call>\n{"name": "get_weather", "arguments": {}}</tool_call>'),
        (Mistral(), '[TOOL_CALLS] [{"name": "Calculator", "arguments": {"expression": "1"}}]'),
    ],
)
def test_free_text_then_one_valid_call_is_taken(fmt, call):
    assert verdict(fmt, "The sky is blue.\n\nNo tool needed.")[:2] == (None, True)
    assert verdict(fmt, "")[:2] == (None, True)  # an empty reply (the model ended at once)
    assert verdict(fmt, "Let me compute.\n" + call)[:2] == (None, True)
    assert verdict(fmt, call)[:2] == (None, True)


@pytest.mark.parametrize(
    "bad",
    [
        '<tool_call>{"name": "calculator", "arguments": {"expression": "2"}}</tool_call>',
        '<tool_call>{"name": "Calculator", "arguments": {"expr": "2"}}</tool_call>',  # schema
        '<tool_call>{"name": "Calculator", "arguments": {"expression": 2}}</tool_call>',  # type
        '<tool_call>{"name": "Calculator", "arguments": {"expression": "2"}}</tool_call> more',
        "text <tool_call>not json",
    ],
)
def test_once_the_opener_appears_only_a_valid_call_follows(bad):
    why, _, _ = verdict(Hermes(), bad)
    assert why is not None


def test_an_unfinished_call_is_not_a_complete_reply():
    why, complete, _ = verdict(Hermes(), 'ok <tool_call>{"name": "Calculator", "argu')
    assert why is None and not complete


def test_an_opener_token_is_named_by_its_id_and_its_text_twin_checks_text():
    # Qwen's <tool_call> is an added token: the grammar names its id, the twin its text
    special = ("<tool_call>", "</tool_call>", "<|im_end|>")
    ids = {"<tool_call>": 151657, "</tool_call>": 151658, "<|im_end|>": 151645}
    constraint, left = auto_call(Hermes(), TOOLS, special, ids)
    assert "<[151657]>" in constraint.source and "<[151658]>" not in constraint.source
    assert left == "</tool_call>"  # the end token is put back by the parser
    checker = TextChecker(constraint)  # checks text by the twin
    assert checker.follow('ok <tool_call>{"name": "get_weather", "arguments": {}}') is None
    assert checker.complete
    bad = TextChecker(constraint).follow('ok <tool_call>{"name": "calculator", "arguments": {}}')
    assert bad is not None
    # DeepSeek's block opens with three special tokens, each named by its id
    begin, call, sep = (
        "<\uff5ctool\u2581calls\u2581begin\uff5c>",
        "<\uff5ctool\u2581call\u2581begin\uff5c>",
        "<\uff5ctool\u2581sep\uff5c>",
    )
    ds, _ = auto_call(DeepSeekV3(), TOOLS, (begin, call, sep), {begin: 7, call: 8, sep: 9})
    assert all(f"<[{i}]>" in ds.source for i in (7, 8, 9)) and ds.text_source is not None


def test_openers_a_grammar_cannot_name_get_none():
    # a special opener without its id, and a bare JSON object (no opener)
    assert auto_call(Hermes(), TOOLS, special=("<tool_call>",)) is None
    assert auto_call(Llama3Json(), TOOLS) is None
    assert (
        auto_call(DeepSeekV3(), TOOLS, special=("<\uff5ctool\u2581calls\u2581begin\uff5c>",))
        is None
    )
    # a text opener (the bundled pair's) has one grammar, over text
    constraint, _ = auto_call(Hermes(), TOOLS)
    assert constraint.text_source is None and "<[" not in constraint.source

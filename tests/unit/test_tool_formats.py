"""The tool-call format registry: a format is one class that registers itself (its markers,
parser, renderer, grammar pieces and detection hint), the config accepts exactly the registered
names, and several calls in one reply are written, constrained and parsed the way each format
writes them (``parallel_tool_calls``), with one call at most when it is off."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.constraint.text import TextChecker
from specguard_integrations.errors import ConfigError, InvalidInputError
from specguard_integrations.tools import (
    ParsedReply,
    ToolCallFormat,
    format_by_name,
    registered,
    unregister,
)
from specguard_integrations.tools.base import invalid_call, parsed_call
from specguard_integrations.tools.grammar import auto_call, forced_call

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 9},
                "b": {"type": "integer", "minimum": 0, "maximum": 9},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
MUL = {
    "type": "function",
    "function": {
        "name": "mul",
        "parameters": {
            "type": "object",
            "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["x"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [ADD, MUL]
TWO = [("add", {"a": 1, "b": 2}), ("mul", {"x": 7})]


@dataclass(frozen=True)
class XmlCall(ToolCallFormat):
    """A fifth format, defined here alone: ``<call name="N">{...}</call>``, one block per call."""

    name: ClassVar[str] = "xml_call"
    opener: ClassVar[str] = "<call"
    closer: ClassVar[str] = "</call>"
    block_per_call: ClassVar[bool] = True

    name_prefix: str = '<call name="'
    args_prefix: str = '">'
    args_suffix: str = ""
    call_end: str = "</call>"
    separator: str = "\n"

    def parse_text(self, text: str) -> ParsedReply:
        calls: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        pattern = re.compile(r'<call name="([^"]*)">(.*?)</call>', re.S)
        for m in pattern.finditer(text):
            try:
                calls.append(parsed_call(m.group(1), json.loads(m.group(2))))
            except ValueError as err:
                invalid.append(invalid_call(m.group(0), err, m.group(1)))
        return ParsedReply(pattern.sub("", text).strip(), calls, invalid)


FORMATS = ["hermes", "llama3_json", "mistral", "deepseek_v3", "xml_call"]


def test_the_config_accepts_exactly_the_registered_names():
    assert list(registered())[:4] == ["deepseek_v3", "hermes", "llama3_json", "mistral"]
    assert SpecGuardConfig(tool_call_format="xml_call").tool_call_format == "xml_call"
    with pytest.raises(ConfigError, match=r"tool_call_format.*pythonic.*xml_call"):
        SpecGuardConfig(tool_call_format="pythonic")
    with pytest.raises(InvalidInputError, match="already registered"):

        @dataclass(frozen=True)
        class Impostor(ToolCallFormat):
            name: ClassVar[str] = "hermes"

    # a class of the same name in another module is another class
    with pytest.raises(InvalidInputError, match=r"already registered by .*hermes\.Hermes"):

        @dataclass(frozen=True)
        class Hermes(ToolCallFormat):
            name: ClassVar[str] = "hermes"

    for bad in (3, " spaced ", "   "):
        with pytest.raises(InvalidInputError, match="name must be a non-empty string"):
            type("Bad", (ToolCallFormat,), {"name": bad})
    assert "hermes" in registered() and registered()["hermes"].__module__.endswith("hermes")


def test_fields_set_as_plain_class_attributes_are_refused_by_name():
    """A subclass that sets `name_prefix` without annotating it never changes its instances;
    using it is refused naming the fields, not run with the inherited defaults."""

    class Careless(ToolCallFormat):
        name: ClassVar[str] = "careless_format"
        name_prefix = "<call>"
        args_prefix = ": "

    try:
        with pytest.raises(InvalidInputError, match=r"name_prefix, args_prefix as plain class"):
            format_by_name("careless_format")
    finally:
        unregister("careless_format")


def test_a_format_added_at_run_time_leaves_when_unregistered():
    @dataclass(frozen=True)
    class Passing(ToolCallFormat):
        name: ClassVar[str] = "passing_format"

    assert "passing_format" in registered()
    unregister("passing_format")
    with pytest.raises(ConfigError, match="passing_format"):
        SpecGuardConfig(tool_call_format="passing_format")


def _body(fmt: ToolCallFormat, text: str, left: str) -> str:
    """What the grammar sees of a reply: after the forced prefix, before the markers it leaves
    to the parser."""
    body = text[len(fmt.forced_prefix(None)) :]
    return body[: len(body) - len(left)] if left and body.endswith(left) else body


@pytest.mark.parametrize("name", FORMATS)
def test_two_calls_are_written_taken_and_parsed_per_format(name):
    fmt = format_by_name(name)
    two = fmt.render_calls(TWO)
    parsed = fmt.parse(two)
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == TWO
    assert parsed.invalid_tool_calls == []
    for parallel, takes_two in ((True, True), (False, False)):
        grammar, left = forced_call(fmt, TOOLS, "", parallel=parallel)
        checker = TextChecker(grammar)
        fits = checker.follow(_body(fmt, two, left)) is None and checker.complete
        assert fits is takes_two, (name, parallel)
        one = TextChecker(grammar)
        body = _body(fmt, fmt.render_calls(TWO[:1]), left)
        assert one.follow(body) is None and one.complete  # one call is always a reply
    # a call to a named tool is one call, whatever parallel says
    named, left = forced_call(fmt, TOOLS, "add", parallel=True)
    after = fmt.forced_prefix("add")
    checker = TextChecker(named)
    rest = two[len(after) :]
    assert checker.follow(rest[: len(rest) - len(left)] if left else rest) is not None


@pytest.mark.parametrize("name", [n for n in FORMATS if format_by_name(n).opener])
def test_auto_takes_text_then_several_calls_only_when_parallel(name):
    fmt = format_by_name(name)
    two = "Let me compute both.\n" + fmt.render_calls(TWO)
    for parallel in (True, False):
        made = auto_call(fmt, TOOLS, parallel=parallel)
        assert made is not None
        grammar, left = made
        checker = TextChecker(grammar)
        text = two[: len(two) - len(left)] if left else two
        assert (checker.follow(text) is None and checker.complete) is parallel


def test_a_bad_second_call_is_refused():
    fmt = format_by_name("hermes")
    grammar, _ = forced_call(fmt, TOOLS, "", parallel=True)
    bad = fmt.render_calls([TWO[0], ("mul", {"x": "seven"})])
    assert TextChecker(grammar).follow(_body(fmt, bad, "")) is not None


def _engine(fmt_name: str = "hermes") -> SpecGuard:
    from specguard_integrations.testing import tiny_lm

    # tau 0: every sampled draft step stands (a greedy target would write the same reply always)
    cfg = SpecGuardConfig(k=2, temperature=1.0, tau=0.0, max_new_tokens=200, max_step_tokens=64)
    return SpecGuard(tiny_lm(seed=1), tiny_lm(seed=2), cfg)


@pytest.mark.parametrize("name", ["hermes", "xml_call"])
def test_parallel_calls_through_the_chat_model(name):
    """Forced to call, a random pair under the grammar writes valid calls only; with
    parallel_tool_calls=False never two; with it, two or more appear among the seeds."""
    from specguard_integrations.langchain import ChatSpecGuard

    chat = ChatSpecGuard(engine=_engine(), tool_call_format=name)
    counts = {True: [], False: []}
    for parallel in (True, False):
        bound = chat.bind_tools(TOOLS, tool_choice="required", parallel_tool_calls=parallel)
        for seed in range(6):
            msg = bound.invoke("Add 1 and 2, and multiply 7.", seed=seed)
            cut = msg.response_metadata["finish_reason"] == "length"
            assert cut or not msg.invalid_tool_calls, msg.invalid_tool_calls
            assert all(c["name"] in ("add", "mul") for c in msg.tool_calls)
            counts[parallel].append(len(msg.tool_calls) + len(msg.invalid_tool_calls))
    assert max(counts[False]) == 1 and min(counts[False]) == 1, counts
    assert max(counts[True]) >= 2, counts


def test_a_fifth_format_forced_through_the_chat_model():
    from specguard_integrations.langchain import ChatSpecGuard

    chat = ChatSpecGuard(engine=_engine(), tool_call_format="xml_call", temperature=0.0)
    msg = chat.bind_tools([ADD], tool_choice="add").invoke("Add 1 and 2.")
    assert [c["name"] for c in msg.tool_calls] == ["add"], msg
    assert set(msg.tool_calls[0]["args"]) == {"a", "b"}
    assert msg.response_metadata["finish_reason"] == "tool_calls"

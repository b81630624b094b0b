"""Tool-call text formats per model family, one registered class each (vLLM's parser names).

- `hermes` (Qwen, Hermes, the bundled pair): ``<tool_call>{"name": N, "arguments": {...}}``
  ``</tool_call>``, repeated for several calls;
- `llama3_json` (Llama 3.1-3.3): the whole turn is ``{"name": N, "parameters": {...}}``;
- `mistral`: ``[TOOL_CALLS] [{"name": N, "arguments": {...}}, ...]``;
- `deepseek_v3`: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>N``
  then ``\n```json\n{...}\n```<｜tool▁call▁end｜>`` per call, and ``<｜tool▁calls▁end｜>``.

A format is read off the tokenizer's chat template once (`tool_templates.detect`): a call with
marked name and arguments is rendered and the text around the marks becomes the format's
prefixes, so forcing a call writes exactly what the template writes. A tokenizer that carries a
transformers response template parses replies with `tokenizer.parse_response`. A template that
renders no tool calls
(Gemma 3, Llama 3 base) is an error unless a format is named; the named format's instructions and
call text are then written into the conversation by us.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import InvalidInputError
from .segmentation import TOOL_CALL_BLOCKS

if TYPE_CHECKING:
    pass

NAME_MARK = "SGFNNAMEMARK"
ARG_MARK = "SGARGMARK"


@dataclass
class ParsedReply:
    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # name, args, id
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)  # + error


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _call(name: Any, args: Any) -> dict[str, Any]:
    """A parsed call, or ValueError naming what is malformed."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError('a tool call needs a "name" string')
    if isinstance(args, str):
        args = json.loads(args) if args.strip() else {}
    if not isinstance(args, dict):
        raise InvalidInputError("tool call arguments must be a JSON object")
    return {"name": name, "args": args, "id": new_call_id()}


def _invalid(raw: str, err: Exception, name: str | None = None) -> dict[str, Any]:
    found = re.search(r'"name"\s*:\s*"([^"]*)"', raw)
    return {
        "name": name or (found.group(1) if found else None),
        "args": raw,
        "id": new_call_id(),
        "error": f"malformed tool call: {err}",
    }


@dataclass(frozen=True)
class ToolCallFormat:
    """How a model writes tool calls: ``open + name_prefix... NAME args_prefix ARGS ... close``.

    `name_prefix` runs from the start of the call block up to the tool's name; `args_prefix`
    from the name to the arguments object. Subclasses parse a reply and write calls as text.
    """

    name: ClassVar[str] = ""
    name_prefix: str = ""
    args_prefix: str = ""
    args_suffix: str = ""  # text that closes a call after its arguments (in its grammar)
    end: str = ""  # markers after that, put back once a constrained call is complete

    @property
    def open(self) -> str:
        return TOOL_CALL_BLOCKS[self.name][0]

    @property
    def close(self) -> str:
        return TOOL_CALL_BLOCKS[self.name][1]

    def forced_prefix(self, name: str | None) -> str:
        """Text that commits the reply to a tool call (to `name`, or to any tool).

        Trailing spaces are left for the model to write: BPE vocabularies merge a space with the
        next character (`` {"``), so a prompt ending in a bare space is a token sequence the
        model never saw in training.
        """
        return (self.name_prefix + (name + self.args_prefix if name else "")).rstrip(" ")

    def parse(self, text: str) -> ParsedReply:
        raise NotImplementedError

    def render_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        """Calls written as the model writes them (for templates that cannot render them)."""
        raise NotImplementedError

    def instructions(self, tools: list[dict[str, Any]]) -> str:
        """The tools and the call format, for templates that cannot render tools."""
        example = self.render_calls([("TOOL_NAME", {"ARGUMENT": "VALUE"})])
        return (
            "You can call these tools:\n"
            + "\n".join(json.dumps(t.get("function", t)) for t in tools)
            + f"\nTo call a tool, reply with exactly:\n{example}"
        )


@dataclass(frozen=True)
class Hermes(ToolCallFormat):
    """``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, repeated for several calls."""

    name: ClassVar[str] = "hermes"
    name_prefix: str = '<tool_call>{"name": "'
    args_prefix: str = '", "arguments": '
    args_suffix: str = "}"
    end: str = "</tool_call>"

    def parse(self, text: str) -> ParsedReply:
        calls: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        pattern = re.compile(
            re.escape(self.open) + r"(.*?)(?:" + re.escape(self.close) + r"|$)", re.S
        )
        for m in pattern.finditer(text):
            raw = m.group(1).strip()
            try:
                if not m.group(0).endswith(self.close):
                    raise InvalidInputError(f"tool call not closed with {self.close}")
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise InvalidInputError("a tool call is a JSON object")
                calls.append(
                    _call(obj.get("name"), obj.get("arguments", obj.get("parameters", {})))
                )
            except ValueError as err:
                invalid.append(_invalid(raw, err))
        return ParsedReply(pattern.sub("", text).strip(), calls, invalid)

    def render_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        return "".join(
            f"{self.open}{json.dumps({'name': n, 'arguments': a})}{self.close}" for n, a in calls
        )


def _json_values(text: str) -> tuple[list[tuple[int, int, Any]], str | None]:
    """Top-level JSON values in `text` (start, end, value), and the first decode error."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, Any]] = []
    pos, error = 0, None
    while True:
        start = min((i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0), default=-1)
        if start < 0:
            return found, error
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as err:
            return found, error or str(err)
        found.append((start, end, value))
        pos = end


@dataclass(frozen=True)
class Llama3Json(ToolCallFormat):
    """A reply that is a JSON object ``{"name": ..., "parameters": ...}`` (several joined by
    ``; ``), optionally after ``<|python_tag|>``. A reply that does not start with ``{`` is text."""

    name: ClassVar[str] = "llama3_json"
    name_prefix: str = '{"name": "'
    args_prefix: str = '", "parameters": '
    args_suffix: str = "}"

    def parse(self, text: str) -> ParsedReply:
        body = text.strip().removeprefix("<|python_tag|>").strip()
        if not body.startswith("{"):
            return ParsedReply(text.strip())
        values, error = _json_values(body)
        calls, invalid, rest = [], [], body
        for start, end, value in values:
            try:
                if not isinstance(value, dict):
                    raise InvalidInputError("a tool call is a JSON object")
                args = value.get("parameters", value.get("arguments", {}))
                calls.append(_call(value.get("name"), args))
            except ValueError as err:
                invalid.append(_invalid(body[start:end], err))
            rest = rest.replace(body[start:end], "", 1)
        if error is not None and not calls:
            invalid.append(_invalid(body, ValueError(error)))
            rest = ""
        return ParsedReply(rest.replace(";", " ").strip(), calls, invalid)

    def render_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        return "; ".join(json.dumps({"name": n, "parameters": a}) for n, a in calls)


@dataclass(frozen=True)
class Mistral(ToolCallFormat):
    """``[TOOL_CALLS] [{"name": ..., "arguments": ...}, ...]``: one JSON array after the marker;
    text before it is content."""

    name: ClassVar[str] = "mistral"
    name_prefix: str = '[TOOL_CALLS] [{"name": "'
    args_prefix: str = '", "arguments": '
    args_suffix: str = "}]"

    def parse(self, text: str) -> ParsedReply:
        if self.open not in text:
            return ParsedReply(text.strip())
        content, _, rest = text.partition(self.open)
        values, error = _json_values(rest)
        if not values or not isinstance(values[0][2], list):
            reason = error or "no JSON array of calls after " + self.open
            return ParsedReply(content.strip(), [], [_invalid(rest, ValueError(reason))])
        calls, invalid = [], []
        for item in values[0][2]:
            try:
                if not isinstance(item, dict):
                    raise InvalidInputError("a tool call is a JSON object")
                calls.append(_call(item.get("name"), item.get("arguments", {})))
            except ValueError as err:
                invalid.append(_invalid(json.dumps(item), err))
        tail = rest[values[0][1] :]
        return ParsedReply((content + tail).strip(), calls, invalid)

    def render_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        items = [{"name": n, "arguments": a} for n, a in calls]
        return f"{self.open} {json.dumps(items)}"


_DS = {
    k: f"<\uff5c{k.replace('_', chr(0x2581))}\uff5c>"
    for k in ("tool_call_begin", "tool_sep", "tool_call_end")
}


@dataclass(frozen=True)
class DeepSeekV3(ToolCallFormat):
    """``<｜tool▁calls▁begin｜>`` blocks of ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME``
    ``\\n```json\\nARGS\\n```<｜tool▁call▁end｜>``, closed by ``<｜tool▁calls▁end｜>``."""

    name: ClassVar[str] = "deepseek_v3"
    name_prefix: str = (
        TOOL_CALL_BLOCKS["deepseek_v3"][0] + _DS["tool_call_begin"] + "function" + _DS["tool_sep"]
    )
    args_prefix: str = "\n```json\n"
    args_suffix: str = "\n```"
    end: str = _DS["tool_call_end"] + TOOL_CALL_BLOCKS["deepseek_v3"][1]

    _CALL: ClassVar[re.Pattern[str]] = re.compile(
        re.escape(_DS["tool_call_begin"])
        + r"(?P<type>.*?)"
        + re.escape(_DS["tool_sep"])
        + r"(?P<name>.*?)\n```json\n(?P<args>.*?)\n```"
        + re.escape(_DS["tool_call_end"]),
        re.S,
    )

    def parse(self, text: str) -> ParsedReply:
        if self.open not in text:
            return ParsedReply(text.strip())
        content, _, rest = text.partition(self.open)
        block, closed, after = rest.partition(self.close)
        calls, invalid = [], []
        for m in self._CALL.finditer(block):
            try:
                calls.append(_call(m.group("name").strip(), m.group("args")))
            except ValueError as err:
                invalid.append(_invalid(m.group(0), err))
        if not closed or (not calls and not invalid):
            named = re.search(re.escape(_DS["tool_sep"]) + r"([^\n<]+)", block)
            reason = ValueError(f"tool calls not closed with {self.close}")
            invalid.append(_invalid(block, reason, named.group(1).strip() if named else None))
        return ParsedReply((content + after).strip(), calls, invalid)

    def render_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        body = "\n".join(
            f"{_DS['tool_call_begin']}function{_DS['tool_sep']}{n}\n```json\n{json.dumps(a)}\n```"
            f"{_DS['tool_call_end']}"
            for n, a in calls
        )
        return self.open + body + self.close


TOOL_CALL_FORMATS: dict[str, type[ToolCallFormat]] = {
    f.name: f for f in (Hermes, Llama3Json, Mistral, DeepSeekV3)
}


def tool_call_format_by_name(name: str) -> ToolCallFormat:
    try:
        return TOOL_CALL_FORMATS[name]()
    except KeyError:
        raise InvalidInputError(
            f"tool_call_format: unknown value {name!r}; use one of {', '.join(TOOL_CALL_FORMATS)}"
        ) from None


@dataclass(frozen=True)
class ResponseTemplateFormat:
    """A format whose replies are parsed by the tokenizer's own response template
    (transformers' ``tokenizer.parse_response``); prefixes and blocks come from `base`."""

    base: ToolCallFormat
    tokenizer: Any

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def args_prefix(self) -> str:
        return self.base.args_prefix

    @property
    def args_suffix(self) -> str:
        return self.base.args_suffix

    @property
    def end(self) -> str:
        return self.base.end

    def forced_prefix(self, name: str | None) -> str:
        return self.base.forced_prefix(name)

    def parse(self, text: str) -> ParsedReply:
        try:
            msg = self.tokenizer.parse_response(text, prefix="")
        except Exception:  # a reply the template does not describe: read it as the base does
            return self.base.parse(text)
        calls, invalid = [], []
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function", tc)
            try:
                calls.append(_call(fn.get("name"), fn.get("arguments", {})))
            except ValueError as err:
                invalid.append(_invalid(json.dumps(fn, default=str), err))
        return ParsedReply(str(msg.get("content") or "").strip(), calls, invalid)

    def render_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        return self.base.render_calls(calls)

    def instructions(self, tools: list[dict[str, Any]]) -> str:
        return self.base.instructions(tools)


AnyFormat = ToolCallFormat | ResponseTemplateFormat

"""Chat plumbing shared by the LangChain and LlamaIndex adapters, framework-free.

Messages are plain dicts in the Hugging Face chat-template shape (``role``, ``content``,
``tool_calls``, ``tool_call_id``). The tool-call text format is read off the tokenizer's own chat
template once (`ToolCallFormat.from_tokenizer`), so forcing and parsing a call follows whatever
template the model was trained with (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``
for the bundled pair and Qwen-style models).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The bundled pair's chat template: system/user/assistant/tool roles, tool definitions as
# ``Tools: name(param, ...)``, assistant tool calls as ``<tool_call>{json}</tool_call>``.
CHAT_TEMPLATE = (
    "{% if tools %}<|system|>\nTools:{% for t in tools %}{% set f = t['function'] if t['function']"
    " is defined else t %} {{ f['name'] }}({{ f['parameters']['properties'] | list | join(', ') }})"
    "{% endfor %}<|end|>\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{% if m['content'] %}{{ m['content'] }}{% endif %}"
    "{% if m['tool_calls'] is defined and m['tool_calls'] %}{% for tc in m['tool_calls'] %}"
    "{% set fn = tc['function'] if tc['function'] is defined else tc %}<tool_call>"
    "{{ {'name': fn['name'], 'arguments': fn['arguments']} | tojson }}</tool_call>{% endfor %}"
    "{% endif %}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_NAME_MARK = "SGFNNAMEMARK"
_ARG_MARK = "SGARGMARK"


@dataclass(frozen=True)
class ToolCallFormat:
    """How a model writes a tool call: ``open + {"name": NAME, "arguments": ARGS} + close``."""

    open: str = "<tool_call>"
    close: str = "</tool_call>"
    name_prefix: str = '<tool_call>{"name": "'  # text from `open` up to the tool name
    args_prefix: str = '", "arguments": '  # text between the name and the arguments object

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> ToolCallFormat:
        """Read the format off the chat template by rendering a marked call."""
        call = {"type": "function", "function": {"name": _NAME_MARK, "arguments": {_ARG_MARK: 1}}}
        msgs: list[Any] = [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ]
        try:
            text = str(tokenizer.apply_chat_template(msgs, tokenize=False))
        except Exception as err:
            raise ValueError(f"the chat template cannot render tool calls: {err}") from err
        at = text.find(_NAME_MARK)
        start = text.rfind("<", 0, at)
        if at < 0 or start < 0:
            raise ValueError("the chat template renders no tool calls")
        tag_end = text.find(">", start)
        open_tag = text[start : tag_end + 1]
        close_tag = "</" + open_tag[1:]
        arg_at = text.find("{", at)
        return cls(
            open=open_tag,
            close=close_tag,
            name_prefix=text[start:at],
            args_prefix=text[at + len(_NAME_MARK) : arg_at],
        )

    def forced_prefix(self, name: str | None) -> str:
        """Text that commits the reply to a tool call (to `name`, or to any tool).

        Trailing spaces are left for the model to write: BPE vocabularies merge a space with the
        next character (`` {"``), so a prompt ending in a bare space is a token sequence the
        model never saw in training.
        """
        return (self.name_prefix + (name + self.args_prefix if name else "")).rstrip(" ")


@dataclass
class ParsedReply:
    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # name, args, id
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)  # + error


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_reply(text: str, fmt: ToolCallFormat) -> ParsedReply:
    """Split generated text into content and tool calls; malformed calls are kept as invalid."""
    calls: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    pattern = re.compile(re.escape(fmt.open) + r"(.*?)(?:" + re.escape(fmt.close) + r"|$)", re.S)
    for m in pattern.finditer(text):
        raw = m.group(1).strip()
        closed = m.group(0).endswith(fmt.close)
        try:
            if not closed:
                raise ValueError(f"tool call not closed with {fmt.close}")
            obj = json.loads(raw)
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
                raise ValueError('a tool call needs a "name" string')
            args = obj.get("arguments", obj.get("parameters", {}))
            if isinstance(args, str):
                args = json.loads(args) if args.strip() else {}
            if not isinstance(args, dict):
                raise ValueError("tool call arguments must be a JSON object")
            calls.append({"name": obj["name"], "args": args, "id": new_call_id()})
        except (ValueError, json.JSONDecodeError) as err:
            name_m = re.search(r'"name"\s*:\s*"([^"]*)"', raw)
            invalid.append(
                {
                    "name": name_m.group(1) if name_m else None,
                    "args": raw,
                    "id": new_call_id(),
                    "error": f"malformed tool call: {err}",
                }
            )
    content = pattern.sub("", text).strip()
    return ParsedReply(content, calls, invalid)


def openai_tool_name(tool: dict[str, Any]) -> str:
    fn = tool.get("function", tool)
    return str(fn["name"])


def normalise_tool_choice(tool_choice: Any, tools: list[dict[str, Any]]) -> str | None:
    """The tool a call must use: a name, "" for any tool, or None when the model decides."""
    if tool_choice in (None, "auto", "none", False):
        return None
    names = [openai_tool_name(t) for t in tools]
    if tool_choice in ("any", "required", True):
        return names[0] if len(names) == 1 else ""
    if isinstance(tool_choice, dict):
        name = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
    else:
        name = str(tool_choice)
    if name not in names:
        raise ValueError(f"tool_choice names {name!r}, which is not a bound tool ({names})")
    return str(name)


@dataclass(frozen=True)
class ChatCall:
    """A chat request turned into what the engine takes: prompt text and a config."""

    prompt: str  # rendered chat template, plus any forced tool-call prefix
    prefix: str  # forced text the reply starts with (already in the prompt)
    config: Any  # SpecGuardConfig
    fmt: ToolCallFormat | None  # set when tools are bound


def chat_lm(engine: Any) -> Any:
    """The local model whose chat template renders prompts: the target's, else the draft's."""
    for backend in (engine.target, engine.draft):
        lm = getattr(backend, "lm", None)
        if lm is not None and getattr(lm.tokenizer, "chat_template", None):
            return lm
    raise ValueError("neither model has a tokenizer with a chat template")


def tool_call_format(lm: Any) -> ToolCallFormat:
    fmt = getattr(lm, "_tool_call_format", None)
    if fmt is None:
        fmt = ToolCallFormat.from_tokenizer(lm.tokenizer)
        lm._tool_call_format = fmt
    return fmt


def prepare_chat(
    engine: Any,
    messages: list[dict[str, Any]],
    config: Any,
    *,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
) -> ChatCall:
    """Render messages (and tools) through the chat template; force a tool call if asked."""
    if not messages:
        raise ValueError("no messages to answer")
    lm = chat_lm(engine)
    text = lm.render_chat(messages, tools=tools or None)
    if not tools:
        if tool_choice not in (None, "auto", "none"):
            raise ValueError("tool_choice was given but no tools are bound")
        return ChatCall(text, "", config, None)
    fmt = tool_call_format(lm)
    forced = normalise_tool_choice(tool_choice, tools)
    prefix = "" if forced is None else fmt.forced_prefix(forced)
    return ChatCall(text + prefix, prefix, config.merged(segmenter="tool_call"), fmt)

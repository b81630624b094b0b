"""Chat plumbing shared by the LangChain and LlamaIndex adapters and the server, framework-free.

Messages are plain dicts in the Hugging Face chat-template shape (``role``, ``content``,
``tool_calls``, ``tool_call_id``). `prepare_chat` checks them (no empty user turn, every tool
result answers an earlier call, tools with JSON-schema parameters), renders them through the
model's chat template, and forces a tool call when asked. The tool-call format comes from
`tool_formats` (read off the template, or named); a reply is parsed with it, calls to tools that
were not bound are kept as invalid calls, and special tokens never reach the content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .constraint import Constraint
from .errors import InvalidInputError
from .segmentation import TOOL_CALL_BLOCKS
from .tool_formats import AnyFormat, ParsedReply
from .tool_grammar import auto_call, forced_call, grammar_available
from .tool_templates import detect

__all__ = ["CHAT_TEMPLATE", "ChatCall", "ParsedReply", "prepare_chat"]

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


def tool_call_dict(
    call_id: str | None, name: str, args: Any, *, json_args: bool = False
) -> dict[str, Any]:
    """One tool call in the OpenAI / chat-template shape; `json_args` writes the arguments as a
    JSON string (the OpenAI wire format) instead of an object (what chat templates take)."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args) if json_args else args},
    }


def openai_tool_name(tool: dict[str, Any]) -> str:
    fn = tool.get("function", tool)
    return str(fn["name"])


def check_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools in the OpenAI shape, each with a name and a JSON-schema object as parameters."""
    for i, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidInputError(f"tools[{i}]: a tool needs a function with a name")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise InvalidInputError(
                f"tools[{i}] ({fn['name']}): parameters must be a JSON schema object, got"
                f" {params!r}"
            )
        if not isinstance(params.get("properties", {}), dict):
            raise InvalidInputError(
                f"tools[{i}] ({fn['name']}): parameters.properties must be an object"
            )
    return tools


def check_history(messages: list[dict[str, Any]]) -> None:
    """Every tool result answers a tool call made earlier in the conversation (the OpenAI API
    rejects a tool message whose id no assistant message issued)."""
    issued: set[str] = set()
    for i, m in enumerate(messages):
        for tc in m.get("tool_calls") or []:
            if tc.get("id"):
                issued.add(str(tc["id"]))
        if m.get("role") == "tool" and m.get("tool_call_id") not in issued:
            raise InvalidInputError(
                f"messages[{i}]: tool message with tool_call_id {m.get('tool_call_id')!r} answers"
                " no earlier tool call"
            )


def keep_bound_calls(parsed: ParsedReply, tools: list[dict[str, Any]]) -> ParsedReply:
    """Calls to a tool that was not bound move to the invalid calls, with the error named."""
    names = {openai_tool_name(t) for t in tools}
    calls, invalid = [], list(parsed.invalid_tool_calls)
    for c in parsed.tool_calls:
        if c["name"] in names:
            calls.append(c)
        else:
            invalid.append(
                {
                    "name": c["name"],
                    "args": json.dumps(c["args"]),
                    "id": c["id"],
                    "error": f"tool {c['name']!r} is not bound (bound: {sorted(names)})",
                }
            )
    return ParsedReply(parsed.content, calls, invalid)


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
        raise InvalidInputError(f"tool_choice names {name!r}, which is not a bound tool ({names})")
    return str(name)


@dataclass(frozen=True)
class ChatCall:
    """A chat request turned into what the engine takes: prompt text and a config."""

    prompt: str  # rendered chat template, plus any forced tool-call prefix
    prefix: str  # forced text the reply starts with (already in the prompt)
    config: Any  # SpecGuardConfig (None where the caller has none, e.g. a plain served model)
    fmt: AnyFormat | None  # set when tools are bound
    tools: list[dict[str, Any]] = field(default_factory=list)
    special: tuple[str, ...] = ()  # special-token texts of the rendering model
    # a forced call's grammar (tool_grammar.py), and the end markers put back after it
    constraint: Constraint | None = None
    end: str = ""

    def parse(self, text: str) -> ParsedReply:
        """The reply `text` (the generated part) split into content and tool calls; special
        tokens are removed from the content."""
        full = self.prefix + text
        opened = self.fmt is not None and TOOL_CALL_BLOCKS[self.fmt.name][0] in full
        if self.end and opened and not full.rstrip().endswith(self.end):
            full += self.end  # the grammar ended the call before its end markers
        if self.fmt is None:
            return ParsedReply(strip_special(full, self.special).strip())
        parsed = keep_bound_calls(self.fmt.parse(full), self.tools)
        parsed.content = strip_special(parsed.content, self.special).strip()
        return parsed


def strip_special(text: str, special: tuple[str, ...]) -> str:
    """`text` without any special-token text (role markers, end of turn, ...)."""
    for tok in special:
        if tok in text:
            text = text.replace(tok, "")
    return text


def tool_call_format(lm: Any, name: str | None = None) -> AnyFormat:
    """The tool-call format of `lm`'s template (or `name`), read once per model and name."""
    cache: dict[str | None, AnyFormat] = lm.__dict__.setdefault("_tool_call_formats", {})
    if name not in cache:
        cache[name] = detect(lm.tokenizer, name)
    return cache[name]


def renders_tools(lm: Any) -> bool:
    """Whether `lm`'s chat template writes the tool list into the prompt."""
    cache = lm.__dict__
    if "_renders_tools" not in cache:
        tool = {
            "type": "function",
            "function": {"name": "SGTOOLMARK", "parameters": {"type": "object"}},
        }
        msgs = [{"role": "user", "content": "x"}]
        try:
            cache["_renders_tools"] = "SGTOOLMARK" in lm.render_chat(msgs, tools=[tool])
        except ValueError:
            cache["_renders_tools"] = False
    return bool(cache["_renders_tools"])


def _as_text_turns(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], fmt: AnyFormat
) -> list[dict[str, Any]]:
    """A conversation for a template without tool support: the tools and the call format in a
    system turn, calls as the format's text, tool results as user turns."""
    out: list[dict[str, Any]] = [{"role": "system", "content": fmt.instructions(tools)}]
    for m in messages:
        calls = [
            (c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls") or []
        ]
        if calls:
            text = (m.get("content") or "") + fmt.render_calls(calls)
            out.append({"role": "assistant", "content": text})
        elif m["role"] == "tool":
            out.append(
                {
                    "role": "user",
                    "content": f"Tool result ({m.get('tool_call_id')}): {m['content']}",
                }
            )
        elif m["role"] == "system" and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": m["content"] + "\n\n" + out[0]["content"]}
        else:
            out.append(m)
    return out


def check_messages(messages: list[dict[str, Any]]) -> None:
    """No conversation without messages, no user turn without text (every surface agrees with
    the engine's ``prompt is empty``), every tool result answering an earlier call."""
    from .engine.backends import check_text

    if not messages:
        raise InvalidInputError("no messages to answer")
    for i, m in enumerate(messages):
        content = m.get("content")
        if m.get("role") == "user" and (not isinstance(content, str) or not content.strip()):
            raise InvalidInputError(f"messages[{i}]: the user message is empty")
        if content is not None:
            check_text(content, f"messages[{i}].content")
    check_history(messages)


def prepare_chat(
    lm: Any,
    messages: list[dict[str, Any]],
    config: Any = None,
    *,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    continue_final: bool = False,
    tool_call_format_name: str | None = None,
) -> ChatCall:
    """Render messages (and tools) through `lm`'s chat template; force a tool call if asked.

    With `continue_final` the last (assistant) message is continued rather than answered.
    `tool_call_format` names the format (vLLM's parser names); by default it is read off the
    template.
    """
    check_messages(messages)
    tools = check_tools(tools) if tools else []
    fmt = tool_call_format(lm, tool_call_format_name) if tools else None
    if fmt is not None and not renders_tools(lm):
        messages = _as_text_turns(messages, tools, fmt)  # the tool list is in a system turn
    native = fmt is None or renders_tools(lm)
    if continue_final:
        if messages[-1].get("role") != "assistant":
            raise InvalidInputError("continuing a reply needs a final assistant message")
        head = lm.render_chat(messages[:-1], tools=tools if native and tools else None)
        text = head + str(messages[-1]["content"])
    else:
        text = lm.render_chat(messages, tools=tools if native and tools else None)
    special = tuple(lm.special_texts)
    if fmt is None:
        if tool_choice not in (None, "auto", "none"):
            raise InvalidInputError("tool_choice was given but no tools are bound")
        return ChatCall(text, "", config, None, special=special)
    forced = normalise_tool_choice(tool_choice, tools)
    prefix = "" if forced is None else fmt.forced_prefix(forced)
    cfg = None
    if config is not None:
        cfg = config.merged(segmenter="tool_call", tool_call_format=fmt.name)
    if not grammar_available():
        return ChatCall(text + prefix, prefix, cfg, fmt, tools, special)
    # added tokens (special or not) are single ids with no text for the grammar's byte view
    vocab = lm.tokenizer.get_added_vocab()
    added = tuple(str(t) for t in vocab)
    if forced is None:  # "auto": free text, or a valid call once the call opener appears
        auto = auto_call(fmt, tools, special + added, {str(t): int(i) for t, i in vocab.items()})
        if auto is None:
            return ChatCall(text, "", cfg, fmt, tools, special)
        return ChatCall(text, "", cfg, fmt, tools, special, *auto)
    grammar, end = forced_call(fmt, tools, forced, special + added)
    return ChatCall(text + prefix, prefix, cfg, fmt, tools, special, grammar, end)


def reasoning_split(call: ChatCall, text: str, steps: list[str]) -> tuple[str, str]:
    """(reasoning, answer content) of a reply `text` written in `steps`: the steps before the
    last, and the last step's content (tool-call text and special tokens removed)."""
    from ._adapter import split_reasoning

    reasoning, answer = split_reasoning(steps, call.prefix + text)
    reasoning = strip_special(reasoning, call.special).strip()
    if not reasoning:
        return "", call.parse(text).content
    content = call.fmt.parse(answer).content if call.fmt is not None else answer
    return reasoning, strip_special(content, call.special).strip()


class ReplyStream:
    """Per-step deltas ``(content, reasoning)`` whose concatenation equals the whole reply's
    message: content stripped of leading and trailing whitespace and of special tokens,
    tool-call text held back (the calls are parsed at the end), and with `reasoning` each step
    sent as reasoning once the next step shows it was not the answer (the last step)."""

    def __init__(self, call: ChatCall, reasoning: bool) -> None:
        self.call, self.reasoning = call, reasoning
        self.text = ""  # the text streamed so far: content, or finished reasoning steps
        self.sent = ""  # what of it was sent (clean, stripped, trailing whitespace held back)
        self.last: str | None = None  # reasoning mode: the latest step, maybe the answer

    def _advance(self, text: str) -> str:
        self.text += text
        full = strip_special(self.text, self.call.special).strip()
        delta = full[len(self.sent) :] if full.startswith(self.sent) else ""
        self.sent += delta
        return delta

    def step(self, text: str, finish: str) -> tuple[str, str]:
        """Deltas for a decided step with this text and finish."""
        if self.call.fmt is not None and (finish == "tool_call" or self.call.prefix):
            return "", ""
        if not self.reasoning:
            return self._advance(text), ""
        previous, self.last = self.last, text
        return "", self._advance(previous) if previous is not None else ""

    def finish(self, text: str, steps: list[str]) -> tuple[str, str]:
        """The rest the whole reply (`text`, written in `steps`) has beyond what was sent."""
        content, sent, reasoning_rest = self.call.parse(text).content, self.sent, ""
        if self.reasoning:
            reasoning, content = reasoning_split(self.call, text, steps)
            if reasoning.startswith(self.sent):
                reasoning_rest = reasoning[len(self.sent) :]
            sent = ""
        rest = content[len(sent) :] if content.startswith(sent) else ""
        return rest, reasoning_rest

"""Chat plumbing shared by the LangChain and LlamaIndex adapters and the server, framework-free.

Messages are plain dicts in the Hugging Face chat-template shape (``role``, ``content``,
``tool_calls``, ``tool_call_id``). `prepare_chat` checks them (no empty user turn, every tool
result answers an earlier call, tools with JSON-schema parameters), renders them through the
model's chat template, and forces a tool call when asked. The tool-call format comes from
`specguard_integrations.tools` (read off the template, or named); a reply is parsed with it,
calls to tools that were not bound are kept as invalid calls, and special tokens never reach the
content.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from .constraint import Constraint
from .errors import InvalidInputError
from .tools import ParsedReply, ToolCallFormat
from .tools.binding import (
    check_tool_names,
    check_tools,
    keep_bound_calls,
    normalise_tool_choice,
)
from .tools.grammar import auto_call, forced_call, grammar_available
from .tools.templates import detect

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


@dataclass(frozen=True)
class ChatCall:
    """A chat request turned into what the engine takes: prompt text and a config."""

    prompt: str  # rendered chat template, plus any forced tool-call prefix
    prefix: str  # forced text the reply starts with (already in the prompt)
    config: Any  # SpecGuardConfig (None where the caller has none, e.g. a plain served model)
    fmt: ToolCallFormat | None  # set when tools are bound
    tools: list[dict[str, Any]] = field(default_factory=list)
    special: tuple[str, ...] = ()  # special-token texts of the rendering model
    # a forced call's grammar (tool_grammar.py), and the end markers put back after it
    constraint: Constraint | None = None
    end: str = ""

    def parse(self, text: str, cut: int | None = None) -> ParsedReply:
        """The reply `text` (the generated part) split into content and tool calls; special
        tokens are removed from the content. `cut`: the reply ran out of its token budget
        there (max_tokens), and an invalid call at its end says so instead of a parser's
        complaint about the cut text."""
        parsed = self._parse(text)
        if cut is not None and parsed.invalid_tool_calls:
            last = dict(parsed.invalid_tool_calls[-1])
            last["error"] = (
                f"the reply was cut at its token budget (max_tokens={cut}) before this call"
                " was complete"
            )
            parsed.invalid_tool_calls[-1] = last
        return parsed

    def _parse(self, text: str) -> ParsedReply:
        full = self.prefix + text
        opened = self.fmt is not None and self.fmt.opener in full
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


# per model: its tool-call formats by the name asked (None: read off the template), and whether
# its template writes the tool list; dropped with the model
_FORMATS: weakref.WeakKeyDictionary[Any, dict[str | None, ToolCallFormat]] = (
    weakref.WeakKeyDictionary()
)
_RENDERS_TOOLS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def tool_call_format(lm: Any, name: str | None = None) -> ToolCallFormat:
    """The tool-call format of `lm`'s template (or `name`), read once per model and name."""
    with _LOCK:
        known = _FORMATS.setdefault(lm, {}).get(name)
    if known is None:
        known = detect(lm.tokenizer, name)
        with _LOCK:
            _FORMATS[lm][name] = known
    return known


def renders_tools(lm: Any) -> bool:
    """Whether `lm`'s chat template writes the tool list into the prompt."""
    with _LOCK:
        known = _RENDERS_TOOLS.get(lm)
    if known is None:
        tool = {
            "type": "function",
            "function": {"name": "SGTOOLMARK", "parameters": {"type": "object"}},
        }
        msgs = [{"role": "user", "content": "x"}]
        try:
            known = "SGTOOLMARK" in lm.render_chat(msgs, tools=[tool])
        except ValueError:
            known = False
        with _LOCK:
            _RENDERS_TOOLS[lm] = known
    return known


def _tool_turns(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], fmt: ToolCallFormat, listed: bool
) -> list[dict[str, Any]]:
    """The conversation as the template takes it with tools bound. Where the template does not
    write the tool list (`listed` False), the tools and the call format go in a system turn.
    Earlier calls are written as the template renders them (its shape: content None or empty,
    arguments as objects or JSON text; results in tool turns); where it renders none, as the
    format's text in the assistant turn, and their results as user turns."""
    out: list[dict[str, Any]] = []
    if not listed:
        out.append({"role": "system", "content": fmt.instructions(tools)})
    for m in messages:
        calls = m.get("tool_calls") or []
        if calls and fmt.template_calls:
            shaped = [
                fmt.history_call(c.get("id"), c["function"]["name"], c["function"]["arguments"])
                for c in calls
            ]
            content = None if fmt.history_content_none else (m.get("content") or "")
            out.append({**m, "content": content, "tool_calls": shaped})
        elif calls:
            pairs = [(c["function"]["name"], _args(c["function"]["arguments"])) for c in calls]
            text = (m.get("content") or "") + fmt.render_calls(pairs)
            out.append({"role": "assistant", "content": text})
        elif m["role"] == "tool" and not fmt.template_calls:
            result = f"Tool result ({m.get('tool_call_id')}): {m['content']}"
            out.append({"role": "user", "content": result})
        elif m["role"] == "system" and out and out[0]["role"] == "system" and not listed:
            out[0] = {"role": "system", "content": m["content"] + "\n\n" + out[0]["content"]}
        else:
            out.append(m)
    return out


def _args(arguments: Any) -> dict[str, Any]:
    """A call's arguments as an object (the OpenAI wire format sends them as JSON text)."""
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"tool call arguments are not JSON: {err}") from None
        return value if isinstance(value, dict) else {"value": value}
    return dict(arguments or {})


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
    parallel_tool_calls: bool = True,
) -> ChatCall:
    """Render messages (and tools) through `lm`'s chat template; force a tool call if asked.

    With `continue_final` the last (assistant) message is continued rather than answered.
    `tool_call_format` names the format (vLLM's parser names); by default it is read off the
    template. `parallel_tool_calls` (OpenAI's, on by default there): a reply not forced to one
    named tool may make several calls, written as the format writes them; False: one at most.
    """
    check_messages(messages)
    # as transformers normalises them: a key whose value is None is absent
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    tools = check_tools(tools) if tools else []
    check_tool_names(tools)
    fmt = tool_call_format(lm, tool_call_format_name) if tools else None
    listed = fmt is None or renders_tools(lm)
    if fmt is not None:
        messages = _tool_turns(messages, tools, fmt, listed)
    shown = tools if listed and tools else None
    if continue_final:
        if messages[-1].get("role") != "assistant":
            raise InvalidInputError("continuing a reply needs a final assistant message")
        text = lm.render_chat(messages[:-1], tools=shown) + str(messages[-1]["content"])
    else:
        text = lm.render_chat(messages, tools=shown)
    special = tuple(lm.special_texts)
    if fmt is None:
        if tool_choice not in (None, "auto", "none"):
            raise InvalidInputError("tool_choice was given but no tools are bound")
        return ChatCall(text, "", config, None, special=special)
    forced = normalise_tool_choice(tool_choice, tools)
    parallel = bool(parallel_tool_calls) and not forced  # a named tool is called once
    prefix = "" if forced is None else fmt.forced_prefix(forced)
    cfg = None
    if config is not None:
        cfg = config.merged(
            segmenter="tool_call", tool_call_format=fmt.name, parallel_tool_calls=parallel
        )
    if not grammar_available():
        return ChatCall(text + prefix, prefix, cfg, fmt, tools, special)
    # added tokens (special or not) are single ids with no text for the grammar's byte view
    vocab = lm.tokenizer.get_added_vocab()
    added = tuple(str(t) for t in vocab)
    ids = {str(t): int(i) for t, i in vocab.items()}
    if forced is None:  # "auto": free text, or valid calls once the call opener appears
        auto = auto_call(fmt, tools, special + added, ids, parallel=parallel)
        if auto is None:
            return ChatCall(text, "", cfg, fmt, tools, special)
        return ChatCall(text, "", cfg, fmt, tools, special, *auto)
    grammar, end = forced_call(fmt, tools, forced, special + added, ids, parallel=parallel)
    return ChatCall(text + prefix, prefix, cfg, fmt, tools, special, grammar, end)


def _split_steps(step_texts: list[str], text: str) -> tuple[str, str]:
    """(reasoning, answer): the answer is the last step, the reasoning every step before it.

    `text` is the whole reply (the steps joined, possibly cut at a stop sequence); the split
    point is where the last step starts in it.
    """
    if len(step_texts) < 2:
        return "", text
    start = min(len("".join(step_texts[:-1])), len(text))
    return text[:start].strip(), text[start:].strip()


def reasoning_split(call: ChatCall, text: str, steps: list[str]) -> tuple[str, str]:
    """(reasoning, answer content) of a reply `text` written in `steps`: the steps before the
    last, and the last step's content (tool-call text and special tokens removed)."""
    reasoning, answer = _split_steps(steps, call.prefix + text)
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
        self.calling = False  # a call block has begun: the rest is parsed at the end

    def _advance(self, text: str) -> str:
        self.text += text
        full = strip_special(self.text, self.call.special).strip()
        delta = full[len(self.sent) :] if full.startswith(self.sent) else ""
        self.sent += delta
        return delta

    def step(self, text: str, finish: str) -> tuple[str, str]:
        """Deltas for a decided step with this text and finish (nothing once a call began)."""
        fmt = self.call.fmt
        if fmt is not None:
            self.calling = self.calling or bool(fmt.opener and fmt.opener in text)
            if finish == "tool_call" or self.call.prefix or self.calling:
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

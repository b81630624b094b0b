"""OpenAI wire format as pure functions: response bodies, stream chunks, usage, errors.

Nothing here touches a request or a model; every function maps plain data to the JSON the
OpenAI API (and vLLM's extensions) defines, so each is unit-tested on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..chat import ChatCall
    from .served import Choice, GenOutput

_ROLE_TAGS = {"system", "developer", "user", "assistant", "tool"}
_TYPE_TAGS = {"str", "int", "float", "bool"}


def error_body(
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}`` with `code` a string or null."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_param(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as the field it names: ``messages[0].tool_calls[1].id``.

    Union branch tags (the role of a message, ``str`` / ``list[...]`` alternatives) are left out.
    """
    out, prev = "", None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(prev, int) and part in _ROLE_TAGS:
            pass  # the branch a message's role selected
        elif part in _TYPE_TAGS or not part.replace("_", "a").isalnum() or part[:1].isupper():
            pass  # the branch of a union (str | list[...]) that failed
        else:
            out += ("." if out else "") + part
        prev = part
    return out or None


_NAMED = re.compile(
    r"^((?:messages|tools|tool_choice|stop|prompt)(?:\[\d+\])?(?:\.\w+)?)(?![\w\[])"
)


def param_named(message: str) -> str | None:
    """The request field an error message starts with (``messages[2].content: ...``)."""
    m = _NAMED.match(message)
    return m.group(1) if m else None


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; ``prompt_tokens_details.cached_tokens`` counts the prompt tokens
    read from the prefix cache (as OpenAI and vLLM report them)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion_choice(i: int, c: Choice, logprobs: bool) -> dict[str, Any]:
    """One ``text_completion`` choice, with vLLM's ``stop_reason``."""
    lp = None
    if logprobs and c.logprobs is not None:
        lp = {
            "tokens": c.tokens,
            "token_logprobs": c.logprobs,
            "top_logprobs": None,
            "text_offset": c.offsets,
        }
    return {
        "index": i,
        "text": c.text,
        "finish_reason": c.finish_reason,
        "stop_reason": c.stop_reason,
        "logprobs": lp,
    }


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parsed calls (name, args, id) as OpenAI ``tool_calls`` (arguments as a JSON string)."""
    from ..chat import tool_call_dict

    return [tool_call_dict(c["id"], c["name"], c["args"], json_args=True) for c in calls]


def chat_message(
    c: Choice,
    call: ChatCall | None,
    json_reply: bool = False,
    steps: list[str] | None = None,
) -> dict[str, Any]:
    """The assistant message of a chat choice: tool calls parsed with the request's format,
    special tokens removed from the content. With `json_reply` (a ``response_format`` served as
    a forced call) the call's arguments are the content. With `steps` (reasoning split on) the
    steps before the answer are its ``reasoning_content``."""
    if call is None:
        return {"role": "assistant", "content": c.text}
    from ..chat import reasoning_split

    parsed = call.parse(c.text, c.completion_tokens if c.finish_reason == "length" else None)
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content or None}
    if steps is not None and not json_reply:
        reasoning, content = reasoning_split(call, c.text, steps)
        if reasoning:
            message.update(content=content or None, reasoning_content=reasoning)
    if json_reply and parsed.tool_calls:
        message["content"] = json.dumps(parsed.tool_calls[0]["args"])
    elif json_reply and c.finish_reason == "length":  # cut: the JSON as written, no markup
        message["content"] = c.text.strip() or None  # (the call's opening is in the prompt)
    elif json_reply and parsed.invalid_tool_calls:  # malformed: the JSON as written
        message["content"] = str(parsed.invalid_tool_calls[0].get("args") or "") or None
    elif parsed.tool_calls or parsed.invalid_tool_calls:
        # a call the model wrote is a call, never markup in the content: one to a tool that is
        # not bound keeps its name, a malformed one its arguments' text as written (a client
        # reads them as it reads any call: LangGraph answers an unknown tool with an error
        # message, langchain-openai puts unparsable arguments in invalid_tool_calls)
        message["tool_calls"] = openai_tool_calls(parsed.tool_calls) + [
            _as_written(bad) for bad in parsed.invalid_tool_calls
        ]
    return message


def _as_written(bad: dict[str, Any]) -> dict[str, Any]:
    """An invalid call (unbound name or malformed) as an OpenAI tool call, arguments as text."""
    return {
        "id": bad["id"],
        "type": "function",
        "function": {"name": bad.get("name") or "", "arguments": str(bad.get("args") or "")},
    }


def chat_finish(c: Choice, message: dict[str, Any]) -> str:
    """tool_calls for a message with calls, unless the reply was cut (length stays length)."""
    if c.finish_reason == "length":
        return "length"
    if message.get("tool_calls"):
        return "tool_calls"
    return "stop" if c.finish_reason == "tool_calls" else c.finish_reason


def chat_choice(
    i: int,
    c: Choice,
    call: ChatCall | None,
    json_reply: bool = False,
    steps: list[str] | None = None,
) -> dict[str, Any]:
    message = chat_message(c, call, json_reply, steps)
    lp: dict[str, Any] | None = None
    if c.logprobs is not None and c.tokens is not None:
        lp = {
            "content": [
                {"token": t, "logprob": p, "bytes": None, "top_logprobs": []}
                for t, p in zip(c.tokens, c.logprobs, strict=True)
            ]
        }
    return {
        "index": i,
        "message": message,
        "finish_reason": chat_finish(c, message),
        "stop_reason": c.stop_reason,
        "logprobs": lp,
    }


def response_body(
    head: dict[str, Any], choices: list[dict[str, Any]], out: GenOutput
) -> dict[str, Any]:
    """A whole response: `head` (id, object, created, model), choices, usage, step records."""
    body = {
        **head,
        "choices": choices,
        "usage": usage(out.prompt_tokens, out.completion_tokens, out.cached_tokens),
    }
    if out.specguard is not None:
        body["specguard"] = out.specguard
    return body


def sse(body: dict[str, Any] | str) -> str:
    """One server-sent event line."""
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"


def chunk_body(
    head: dict[str, Any], choice: dict[str, Any] | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A stream chunk; `choice` None is the trailing usage chunk (``choices: []``)."""
    return {**head, "choices": [] if choice is None else [choice], **(extra or {})}


def delta_choice(chat: bool, text: str | None = None, **fields: Any) -> dict[str, Any]:
    """A stream choice: ``delta`` (chat) or ``text`` (completions)."""
    finish = fields.pop("finish_reason", None)
    if chat:
        delta = fields.pop("delta", {} if text is None else {"content": text})
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None, **fields}
    return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None, **fields}


def text_delta(content: str, reasoning: str = "") -> dict[str, Any]:
    """A chat delta with content and/or ``reasoning_content`` (vLLM's field)."""
    delta: dict[str, Any] = {"content": content} if content else {}
    if reasoning:
        delta["reasoning_content"] = reasoning
    return delta


def final_delta(message: dict[str, Any], rest: tuple[str, str]) -> dict[str, Any]:
    """The last chat delta: the rest of the text (`rest`: content, reasoning) and the tool
    calls, parsed once the reply was complete."""
    delta = text_delta(*rest)
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": j, **tc} for j, tc in enumerate(message["tool_calls"])]
    return delta

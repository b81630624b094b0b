"""The grammar of a forced tool call in a model family's own format.

A forced call (`tool_choice` required, named or any; a ``response_format`` served as a call)
already starts with the format's forced prefix in the prompt (`ToolCallFormat.forced_prefix`).
Under ``tool_choice="auto"`` (`auto_call`) the reply is free text without the format's call
opener, or text up to the first opener and then one call, as above.
What the model writes after it is constrained (`specguard_integrations.Constraint`, a Lark grammar
with an embedded JSON schema): the name of a bound tool when none was named, the format's text
between name and arguments, the arguments as compact JSON valid under that tool's schema, and
the format's text that closes them. The format's end markers (``</tool_call>``, DeepSeek's
call-end tokens), which may be special tokens that have no text for a grammar, are put back
after the grammar is complete (`ChatCall.parse`).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from typing import TYPE_CHECKING, Any

from .constraint import Constraint

if TYPE_CHECKING:
    from .tool_formats import AnyFormat


@functools.cache
def grammar_available() -> bool:
    """Whether constrained sampling can run here (the ``[grammar]`` extra is installed)."""
    return importlib.util.find_spec("llguidance") is not None


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _name(tool: dict[str, Any]) -> str:
    return str(tool.get("function", tool)["name"])


def _arguments(tool: dict[str, Any]) -> str:
    """The tool's parameters as an embedded schema, written compactly."""
    fn = tool.get("function", tool)
    schema = dict(fn.get("parameters") or {"type": "object"})
    schema["x-guidance"] = {
        "whitespace_flexible": False,
        "item_separator": ", ",
        "key_separator": ": ",
    }
    return "%json " + json.dumps(schema)


_REGEX_META = set("\\.+*?()|[]{}^$#&-~/")


def _regex(text: str) -> str:
    """`text` as a literal inside a grammar regex (only the regex syntax's own metacharacters
    escaped: a backslash before ``<`` means a word boundary there)."""
    return "".join("\\" + c if c in _REGEX_META else c for c in text)


def _calls(fmt: AnyFormat, tools: list[dict[str, Any]], close: str) -> tuple[str, list[str]]:
    """The alternatives ``NAME args_prefix ARGS close``, one rule per bound tool."""
    rules = []
    for i, tool in enumerate(tools):
        between = _literal(_name(tool) + fmt.args_prefix)
        rules.append(f"call{i}: {between} {_arguments(tool)} {close}")
    return " | ".join(f"call{i}" for i in range(len(tools))), rules


def _closing(fmt: AnyFormat, special: tuple[str, ...]) -> tuple[str, str]:
    """The grammar's closing literal, and the end markers left for `ChatCall.parse`."""
    plain_end = not any(s and s in fmt.end for s in special)
    closing = fmt.args_suffix + (fmt.end if plain_end else "")
    return (_literal(closing) if closing else ""), ("" if plain_end else fmt.end)


def _tokens(text: str, ids: dict[str, int]) -> str:
    """`text` as grammar items: each of the model's special or added tokens in it (`ids`) as
    its single token ``<[id]>``, the text between as literals."""
    items, i = [], 0
    while i < len(text):
        hit = max((t for t in ids if t and text.startswith(t, i)), key=len, default=None)
        if hit is not None:
            items.append(f"<[{ids[hit]}]>")
            i += len(hit)
            continue
        j = i + 1
        while j < len(text) and not any(t and text.startswith(t, j) for t in ids):
            j += 1
        items.append(_literal(text[i:j]))
        i = j
    return " ".join(items)


def auto_call(
    fmt: AnyFormat,
    tools: list[dict[str, Any]],
    special: tuple[str, ...] = (),
    token_ids: dict[str, int] | None = None,
) -> tuple[Constraint, str] | None:
    """What a reply may be under ``tool_choice="auto"``: text without the format's call opener
    (``<tool_call>``, ``[TOOL_CALLS]``), or text up to the first opener and then one call to a
    bound tool with arguments valid under its schema.

    Where the opener is one of the model's special or added tokens (Qwen's ``<tool_call>``,
    DeepSeek's markers) and `token_ids` gives its id, the grammar names that token
    (``<[id]>``); free text may not spell the opener out either. Such a grammar carries its text
    twin (the tokens as text) for checking text another writer produced. None where the format
    has no opener (llama3_json's bare object) or a special opener's id is unknown: such
    replies are parsed as written, and a call that is not valid becomes an invalid call
    (`chat.keep_bound_calls`)."""
    from .segmentation import TOOL_CALL_BLOCKS

    opener = TOOL_CALL_BLOCKS[fmt.name][0]
    head = fmt.forced_prefix(None)
    if not opener or not head.startswith(opener):
        return None
    rest = head[len(opener) :].lstrip()
    close, left = _closing(fmt, special)
    alternatives, rules = _calls(fmt, tools, close)
    o = _regex(opener)
    body = f"TEXT: /(?s:.+)/ & ~/(?s:.*{o}.*)/\nWS: /[ \\t\\n]+/\n" + "\n".join(rules) + "\n"
    as_text = (
        f"start: TEXT? | CALLED WS? {_literal(rest)} ({alternatives})\n"
        f"CALLED: /(?s:.*){o}/ & ~/(?s:.*{o}.+)/\n" + body
    )
    named = [s for s in special if s and (s in head or opener in s)]
    if not named:
        return Constraint.lark(as_text), left
    ids = {s: i for s, i in (token_ids or {}).items() if s in named}
    if any(s not in ids for s in named):
        return None
    tokens = (
        f"start: TEXT? | TEXT? {_tokens(opener, ids)} WS? {_tokens(rest, ids)} ({alternatives})\n"
    )
    named_ids = tuple(sorted(ids.items()))
    return Constraint.lark(tokens + body, text_twin=as_text, tokens=named_ids), left


def forced_call(
    fmt: AnyFormat, tools: list[dict[str, Any]], forced: str, special: tuple[str, ...] = ()
) -> tuple[Constraint, str]:
    """What may follow `fmt.forced_prefix(forced)`: a call to the tool named `forced`, or to
    any bound tool when `forced` is "". Returns the grammar and the end markers left for
    `ChatCall.parse` to put back: none when they are plain text for this model (the grammar
    then writes them: a model may write ``"}}</tool_call>`` as one token), all of them when
    one is an added or special token of the model (`special`), which has no text for a grammar
    to match."""
    gap = fmt.args_prefix[len(fmt.args_prefix.rstrip(" ")) :]  # spaces the prefix left out
    close, left = _closing(fmt, special)
    if forced:
        tool = next(t for t in tools if _name(t) == forced)
        head = _literal(gap) if gap else ""
        return Constraint.lark(f"start: {head} {_arguments(tool)} {close}\n"), left
    alternatives, rules = _calls(fmt, tools, close)
    return Constraint.lark(f"start: {alternatives}\n" + "\n".join(rules) + "\n"), left

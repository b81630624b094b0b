"""The grammar of tool calls in a model family's own format (`base.ToolCallFormat`).

A forced call (`tool_choice` required, named or any; a ``response_format`` served as a call)
already starts with the format's forced prefix in the prompt (`ToolCallFormat.forced_prefix`).
Under ``tool_choice="auto"`` (`auto_call`) the reply is free text without the format's call
opener, or text up to the first opener and then the calls, as below.

What the model writes after that is constrained (a Lark grammar with an embedded JSON schema,
`specguard_integrations.Constraint`): the name of a bound tool when none was named, the format's
text between name and arguments, the arguments as compact JSON valid under that tool's schema,
and the format's text that closes them. With `parallel` (OpenAI's ``parallel_tool_calls``, the
default there) a reply that is not forced to one named tool may go on with more calls, each
written as the format writes a later call (`separator`, `next_prefix`); without it, exactly one
call. A call to a named tool is always one call (as OpenAI and vLLM serve it).

Markers that are special or added tokens of the model (Qwen3's ``<tool_call>``, DeepSeek's) are
named by their token id (``<[id]>``) where the grammar must write them (an opener under
"auto", the markers between calls); such a grammar carries its text twin for a writer with
another vocabulary. End markers after the last call that are special tokens are not written by
the grammar: they are put back after it is complete (`ChatCall.parse`).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from typing import Any

from ..constraint import Constraint
from .base import ToolCallFormat


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


def _items(text: str, ids: dict[str, int]) -> str:
    """`text` as grammar items: each of the model's special or added tokens in it (`ids`) as
    its single token ``<[id]>``, the text between as literals ("" for empty text)."""
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


@dataclass(frozen=True)
class _Spec:
    """What the grammar is built from: the format, the bound tools, the model's special or
    added token texts (`special`) and their ids where known (`ids`)."""

    fmt: ToolCallFormat
    tools: list[dict[str, Any]]
    special: tuple[str, ...]
    ids: dict[str, int]

    def plain(self, text: str) -> bool:
        """No special token of the model in `text`."""
        return not any(s and s in text for s in self.special)

    def named(self, texts: list[str]) -> tuple[dict[str, int], bool]:
        """The ids of the special tokens in `texts`, and whether every one is known."""
        found = {s for s in self.special if s and any(s in t for t in texts)}
        ids = {s: i for s, i in self.ids.items() if s in found}
        return ids, len(ids) == len(found)

    def calls(self, ids: dict[str, int]) -> tuple[str, list[str]]:
        """The alternatives ``NAME args_prefix ARGS``, one rule per bound tool."""
        rules = []
        for i, tool in enumerate(self.tools):
            between = _items(_name(tool) + self.fmt.args_prefix, ids)
            rules.append(f"call{i}: {between} {_arguments(tool)}")
        return "(" + " | ".join(f"call{i}" for i in range(len(self.tools))) + ")", rules

    def closing(self, ids: dict[str, int]) -> tuple[str, str]:
        """The grammar's closing items, and the end markers left for `ChatCall.parse` (all of
        them when one is a special token: the grammar stops before them)."""
        fmt = self.fmt
        if self.plain(fmt.end):
            return _items(fmt.args_suffix + fmt.end, ids), ""
        return _items(fmt.args_suffix, ids), fmt.end

    def more(self, ids: dict[str, int]) -> str:
        """The text between one call's arguments and the next call's name."""
        fmt = self.fmt
        return _items(fmt.args_suffix + fmt.call_end + fmt.separator + fmt.later_prefix, ids)


def _constraint(build: Any, spec: _Spec, texts: list[str]) -> Constraint | None:
    """`build(ids)` as a constraint: naming the special tokens in `texts` by id, with a text
    twin, where there are any; None where one's id is unknown."""
    ids, known = spec.named(texts)
    if not known:
        return None
    if not ids:
        return Constraint.lark(build({}))
    return Constraint.lark(build(ids), text_twin=build({}), tokens=tuple(sorted(ids.items())))


def forced_call(
    fmt: ToolCallFormat,
    tools: list[dict[str, Any]],
    forced: str,
    special: tuple[str, ...] = (),
    token_ids: dict[str, int] | None = None,
    *,
    parallel: bool = False,
) -> tuple[Constraint, str]:
    """What may follow `fmt.forced_prefix(forced)`: one call to the tool named `forced`; or, when
    `forced` is "", a call to any bound tool, and with `parallel` more calls after it. Returns
    the grammar and the end markers left for `ChatCall.parse` to put back: none when they are
    plain text for this model (the grammar then writes them: a model may write ``"}}</tool_call>``
    as one token), all of them when one is an added or special token of the model (`special`),
    which the grammar does not write."""
    spec = _Spec(fmt, tools, special, token_ids or {})
    gap = fmt.args_prefix[len(fmt.args_prefix.rstrip(" ")) :]  # spaces the prefix left out
    if forced:
        tool = next(t for t in tools if _name(t) == forced)
        head = _literal(gap) if gap else ""
        close, left = spec.closing({})
        return Constraint.lark(f"start: {head} {_arguments(tool)} {close}\n"), left

    def build(ids: dict[str, int]) -> str:
        alternatives, rules = spec.calls(ids)
        close, _ = spec.closing(ids)
        more = f" ({spec.more(ids)} {alternatives})*" if parallel else ""
        return f"start: {alternatives}{more} {close}\n" + "\n".join(rules) + "\n"

    texts = [fmt.args_suffix + fmt.call_end + fmt.separator + fmt.later_prefix] if parallel else []
    grammar = _constraint(build, spec, texts) if parallel else None
    if grammar is None:  # one call (a marker between calls is a token of unknown id)
        parallel = False
        grammar = Constraint.lark(build({}))
    return grammar, spec.closing({})[1]


def auto_call(
    fmt: ToolCallFormat,
    tools: list[dict[str, Any]],
    special: tuple[str, ...] = (),
    token_ids: dict[str, int] | None = None,
    *,
    parallel: bool = False,
) -> tuple[Constraint, str] | None:
    """What a reply may be under ``tool_choice="auto"``: text without the format's call opener
    (``<tool_call>``, ``[TOOL_CALLS]``), or text up to the first opener and then one call to a
    bound tool with arguments valid under its schema (with `parallel`, one or more calls).

    Where the opener is one of the model's special or added tokens (Qwen's ``<tool_call>``,
    DeepSeek's markers) and `token_ids` gives its id, the grammar names that token
    (``<[id]>``); free text may not spell the opener out either. Such a grammar carries its text
    twin (the tokens as text) for checking text another writer produced. None where the format
    has no opener (llama3_json's bare object) or a special opener's id is unknown: such
    replies are parsed as written, and a call that is not valid becomes an invalid call
    (`binding.keep_bound_calls`)."""
    opener = fmt.opener
    head = fmt.forced_prefix(None)
    if not opener or not head.startswith(opener):
        return None
    spec = _Spec(fmt, tools, special, token_ids or {})
    rest = head[len(opener) :].lstrip()
    o = _regex(opener)
    text_rules = f"TEXT: /(?s:.+)/ & ~/(?s:.*{o}.*)/\nWS: /[ \\t\\n]+/\n"

    def build(ids: dict[str, int]) -> str:
        alternatives, rules = spec.calls(ids)
        close, _ = spec.closing(ids)
        more = f" ({spec.more(ids)} {alternatives})*" if parallel else ""
        calls = f"{_items(rest, ids)} {alternatives}{more} {close}"
        if ids and opener in ids:  # the opener is one token of this model
            start = f"start: TEXT? | TEXT? {_items(opener, ids)} WS? {calls}\n"
        else:
            called = f"CALLED: /(?s:.*){o}/ & ~/(?s:.*{o}.+)/\n"
            start = f"start: TEXT? | CALLED WS? {calls}\n{called}"
        return start + text_rules + "\n".join(rules) + "\n"

    texts = [head]
    if parallel:
        texts.append(fmt.args_suffix + fmt.call_end + fmt.separator + fmt.later_prefix)
    grammar = _constraint(build, spec, texts)
    if grammar is None and parallel:
        return auto_call(fmt, tools, special, token_ids, parallel=False)
    if grammar is None:
        return None
    return grammar, spec.closing({})[1]

"""The grammar of a forced tool call in a model family's own format.

A forced call (`tool_choice` required, named or any; a ``response_format`` served as a call)
already starts with the format's forced prefix in the prompt (`ToolCallFormat.forced_prefix`).
What the model writes after it is constrained (`engine.constraint.Constraint`, a Lark grammar
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

from .engine.constraint import Constraint

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
    plain_end = not any(s and s in fmt.end for s in special)
    closing = fmt.args_suffix + (fmt.end if plain_end else "")
    left = "" if plain_end else fmt.end
    close = _literal(closing) if closing else ""
    if forced:
        tool = next(t for t in tools if _name(t) == forced)
        head = _literal(gap) if gap else ""
        return Constraint.lark(f"start: {head} {_arguments(tool)} {close}\n"), left
    rules = []
    for i, tool in enumerate(tools):
        between = _literal(_name(tool) + fmt.args_prefix)
        rules.append(f"call{i}: {between} {_arguments(tool)} {close}")
    alternatives = " | ".join(f"call{i}" for i in range(len(tools)))
    return Constraint.lark(f"start: {alternatives}\n" + "\n".join(rules) + "\n"), left

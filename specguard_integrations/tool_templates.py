"""A model family's tool-call format read off its tokenizer's chat template (`detect`): a call
with marked name and arguments is rendered and the text around the marks becomes the format's
prefixes, so forcing a call writes exactly what the template writes (formats: `tool_formats.py`).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError
from .segmentation import TOOL_CALL_BLOCKS
from .tool_formats import (
    ARG_MARK,
    NAME_MARK,
    TOOL_CALL_FORMATS,
    AnyFormat,
    ResponseTemplateFormat,
    ToolCallFormat,
    tool_call_format_by_name,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


# How the assistant's call turn is written for the template, tried in order: content empty and
# arguments an object (what most templates take), then content None (DeepSeek-V3's own template
# writes calls only then) with the arguments as an object, then as a JSON string (the same
# template concatenates them as text).
_CALL_SHAPES: tuple[tuple[str | None, bool], ...] = (("", False), (None, False), (None, True))


def render_marked_call(
    tokenizer: PreTrainedTokenizerBase, content: str | None = "", json_args: bool = False
) -> str:
    """The template's text for a conversation ending in one call with marked name/arguments."""
    args: Any = {ARG_MARK: 1}
    call = {
        "type": "function",
        "id": "call_SGMARK00",
        "function": {"name": NAME_MARK, "arguments": json.dumps(args) if json_args else args},
    }
    msgs: list[Any] = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": content, "tool_calls": [call]},
    ]
    if content is None:
        return _render_as_given(tokenizer, msgs)
    return str(tokenizer.apply_chat_template(msgs, tokenize=False))


def _render_as_given(tokenizer: PreTrainedTokenizerBase, msgs: list[Any]) -> str:
    """The chat template applied to `msgs` exactly as given: `apply_chat_template` drops the keys
    whose value is None, so a template that tests ``content is none`` never sees None there."""
    from transformers.utils import chat_template_utils

    render: Any = chat_template_utils.render_jinja_template  # returns (texts, indices)
    tokens: dict[str, Any] = dict(tokenizer.special_tokens_map)
    rendered, _ = render(
        conversations=[msgs], chat_template=tokenizer.get_chat_template(), **tokens
    )
    return str(rendered[0])


def _render_some_call(tokenizer: PreTrainedTokenizerBase) -> tuple[str, Exception | None]:
    """The first rendering of `_CALL_SHAPES` that writes the marked call, else the first text
    rendered (a template without tool calls), else the first error (one that fails on them)."""
    texts: list[str] = []
    failed: Exception | None = None
    for content, json_args in _CALL_SHAPES:
        try:
            text = render_marked_call(tokenizer, content, json_args)
        except Exception as err:
            failed = failed or err
            continue
        if NAME_MARK in text:
            return text, None
        texts.append(text)
    return (texts[0], None) if texts else ("", failed)


def detect(tokenizer: PreTrainedTokenizerBase, name: str | None = None) -> AnyFormat:
    """The tool-call format of `tokenizer`: `name` if given, else read off its chat template.

    Raises `ValueError` naming the template and the option when the template renders no calls
    and no format is named.
    """
    text, failed = _render_some_call(tokenizer)
    found = name or _family(text)
    if found is None:
        why = f"fails on tool calls ({failed})" if failed else "renders no tool calls"
        raise InvalidInputError(
            f"the chat template of {getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} {why}:"
            f" name the format with tool_call_format= (one of {', '.join(TOOL_CALL_FORMATS)})"
        )
    fmt = tool_call_format_by_name(found)
    fmt = _learned(fmt, text) if NAME_MARK in text else fmt
    if getattr(tokenizer, "response_template", None):
        return ResponseTemplateFormat(fmt, tokenizer)
    return fmt


def _family(text: str) -> str | None:
    if NAME_MARK not in text:
        return None
    for name in ("deepseek_v3", "mistral", "hermes"):
        if TOOL_CALL_BLOCKS[name][0] in text:
            return name
    at = text.find(NAME_MARK)
    if re.search(r'\{\s*"name"\s*:\s*"$', text[:at]) and '"parameters"' in text[at:]:
        return "llama3_json"
    if re.search(r'\{\s*"name"\s*:\s*"$', text[:at]):
        return "hermes" if "<tool_call>" in text else "llama3_json"
    return None


def _learned(fmt: ToolCallFormat, text: str) -> ToolCallFormat:
    """`fmt` with the prefixes the template writes around the marked name."""
    at = text.find(NAME_MARK)
    start = text.rfind(fmt.open, 0, at) if fmt.open else text.rfind("{", 0, at)
    arg_at = text.find("{", at)
    if start < 0 or arg_at < 0:
        return fmt
    return type(fmt)(name_prefix=text[start:at], args_prefix=text[at + len(NAME_MARK) : arg_at])

"""A model family's tool-call format read off its tokenizer's chat template (`detect`): calls
with marked names and arguments are rendered, the format whose `detects` hint matches is picked,
and the text around the marks becomes its prefixes and the separator between two calls, so
forcing a call writes exactly what the template writes. The shape of the assistant turn the
template renders calls for (content empty or None, arguments as objects or JSON text) is kept
for rendering an agent's history the same way."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .base import ARG_MARK, NAME_MARK, ToolCallFormat, format_by_name, registered

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SECOND_MARK = "SGSECONDNAMEMARK"

# How the assistant's call turn is written for the template, tried in order: content empty and
# arguments an object (what most templates take), then content None (DeepSeek-V3's own template
# writes calls only then) with the arguments as an object, then as a JSON string (the same
# template concatenates them as text).
_CALL_SHAPES: tuple[tuple[str | None, bool], ...] = (("", False), (None, False), (None, True))


def render_as_given(
    tokenizer: PreTrainedTokenizerBase,
    msgs: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = False,
) -> str:
    """The chat template applied to `msgs` exactly as given: `apply_chat_template` drops the keys
    whose value is None, so a template that tests ``content is none`` never sees None there."""
    from transformers.utils import chat_template_utils

    render: Any = chat_template_utils.render_jinja_template  # returns (texts, indices)
    rendered, _ = render(
        conversations=[msgs],
        tools=tools,
        chat_template=tokenizer.get_chat_template(None, tools),
        add_generation_prompt=add_generation_prompt,
        **dict(tokenizer.special_tokens_map),
    )
    return str(rendered[0])


def render_marked_calls(
    tokenizer: PreTrainedTokenizerBase,
    content: str | None = "",
    json_args: bool = False,
    names: tuple[str, ...] = (NAME_MARK,),
) -> str:
    """The template's text for a conversation ending in calls with marked names/arguments."""
    args: Any = {ARG_MARK: 1}
    calls = [
        {
            "type": "function",
            "id": f"call_SGMARK{i:02d}",
            "function": {"name": n, "arguments": json.dumps(args) if json_args else args},
        }
        for i, n in enumerate(names)
    ]
    msgs: list[Any] = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": content, "tool_calls": calls},
    ]
    return render_as_given(tokenizer, msgs)


def _render_some_call(
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[str, tuple[str | None, bool] | None, Exception | None]:
    """The first rendering of `_CALL_SHAPES` that writes the marked call, with its shape; else
    the first text rendered (a template without tool calls), else the first error."""
    texts: list[str] = []
    failed: Exception | None = None
    for content, json_args in _CALL_SHAPES:
        try:
            text = render_marked_calls(tokenizer, content, json_args)
        except Exception as err:  # jinja raises its own errors
            failed = failed or err
            continue
        if NAME_MARK in text:
            return text, (content, json_args), None
        texts.append(text)
    return (texts[0], None, None) if texts else ("", None, failed)


def _family(text: str) -> str | None:
    """The registered format whose hint matches a rendering of one marked call."""
    at = text.find(NAME_MARK)
    if at < 0:
        return None
    ranked = sorted(registered().values(), key=lambda cls: cls.detect_rank)
    return next((cls.name for cls in ranked if cls.detects(text, at)), None)


def detect(tokenizer: PreTrainedTokenizerBase, name: str | None = None) -> ToolCallFormat:
    """The tool-call format of `tokenizer`: `name` if given, else read off its chat template.

    Raises `InvalidInputError` naming the template and the option when the template renders no
    calls and no format is named.
    """
    text, shape, failed = _render_some_call(tokenizer)
    found = name or _family(text)
    if found is None:
        why = f"fails on tool calls ({failed})" if failed else "renders no tool calls"
        raise InvalidInputError(
            f"the chat template of {getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} {why}:"
            f" name the format with tool_call_format= (one of {', '.join(registered())})"
        )
    fmt = format_by_name(found)
    # learned from the template only where it writes calls in this format (a named format the
    # template does not write is used as the format itself, its calls in history as text)
    if shape is not None and NAME_MARK in text and type(fmt).detects(text, text.find(NAME_MARK)):
        fmt = _learned(fmt, text, tokenizer, shape)
    if getattr(tokenizer, "response_template", None):
        fmt = dataclasses.replace(fmt, response_parser=tokenizer)
    return fmt


def _learned(
    fmt: ToolCallFormat,
    text: str,
    tokenizer: PreTrainedTokenizerBase,
    shape: tuple[str | None, bool],
) -> ToolCallFormat:
    """`fmt` with the prefixes the template writes around the marked name, the separator it
    writes between two calls, and the shape of the turn it renders calls for."""
    at = text.find(NAME_MARK)
    start = text.rfind(fmt.opener, 0, at) if fmt.opener else text.rfind("{", 0, at)
    arg_at = text.find("{", at)
    out = dataclasses.replace(
        fmt, template_calls=True, history_content_none=shape[0] is None, history_json_args=shape[1]
    )
    if start < 0 or arg_at < 0:
        return out
    out = dataclasses.replace(
        out,
        name_prefix=text[start:at],
        args_prefix=text[at + len(NAME_MARK) : arg_at],
        args_suffix=_args_suffix(fmt, text, arg_at),
    )
    return _learned_separator(out, tokenizer, shape)


def _args_suffix(fmt: ToolCallFormat, text: str, arg_at: int) -> str:
    """The text between a call's arguments object and the call's end marker, as the template
    writes it (Qwen3: ``}\n`` before ``</tool_call>``); the format's own where none is seen."""
    try:
        _, args_end = json.JSONDecoder().raw_decode(text, arg_at)
    except json.JSONDecodeError:
        return fmt.args_suffix
    marker = fmt.call_end or fmt.block_end
    found = text.find(marker, args_end) if marker else -1
    gap = text[args_end:found]
    if found < 0 or len(gap) > 16 or not gap.strip().startswith(fmt.args_suffix.strip()):
        return fmt.args_suffix
    return gap


def _learned_separator(
    fmt: ToolCallFormat, tokenizer: PreTrainedTokenizerBase, shape: tuple[str | None, bool]
) -> ToolCallFormat:
    """`fmt` with the text the template writes between the end of one call and the next call's
    name, split into `separator` and the later call's prefix where it has the expected form."""
    try:
        two = render_marked_calls(tokenizer, shape[0], shape[1], (NAME_MARK, SECOND_MARK))
    except Exception:  # a template that renders one call only
        return fmt
    at, second = two.find(NAME_MARK), two.find(SECOND_MARK)
    closed = two.find(fmt.args_suffix + fmt.call_end, two.find(ARG_MARK, at))
    if at < 0 or second < 0 or closed < 0:
        return fmt
    between = two[closed + len(fmt.args_suffix + fmt.call_end) : second]
    later = fmt.later_prefix
    separator = between[: len(between) - len(later)]
    # only whitespace and one comma or semicolon: anything else is a field the template adds
    # to a call of the history (Mistral's call ids), not how the model writes the next call
    if not between.endswith(later) or not re.fullmatch(r"\s*[,;]?\s*", separator):
        return fmt
    return dataclasses.replace(fmt, separator=separator)

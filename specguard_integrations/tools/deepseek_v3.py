"""`deepseek_v3`: ``<｜tool▁calls▁begin｜>`` then, per call, ``<｜tool▁call▁begin｜>function
<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```<｜tool▁call▁end｜>`` (a newline between calls),
closed by ``<｜tool▁calls▁end｜>``. Every marker is a special token of DeepSeek's tokenizer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .base import ParsedReply, ToolCallFormat, invalid_call, parsed_call


def _marker(words: str) -> str:
    return f"<\uff5c{words.replace('_', chr(0x2581))}\uff5c>"


CALLS_BEGIN, CALLS_END = _marker("tool_calls_begin"), _marker("tool_calls_end")
CALL_BEGIN, SEP, CALL_END = (
    _marker("tool_call_begin"),
    _marker("tool_sep"),
    _marker("tool_call_end"),
)


@dataclass(frozen=True)
class DeepSeekV3(ToolCallFormat):
    name: ClassVar[str] = "deepseek_v3"
    opener: ClassVar[str] = CALLS_BEGIN
    closer: ClassVar[str] = CALLS_END
    detect_rank: ClassVar[int] = 10

    name_prefix: str = CALLS_BEGIN + CALL_BEGIN + "function" + SEP
    args_prefix: str = "\n```json\n"
    args_suffix: str = "\n```"
    call_end: str = CALL_END
    block_end: str = CALLS_END
    separator: str = "\n"
    next_prefix: str | None = CALL_BEGIN + "function" + SEP

    _CALL: ClassVar[re.Pattern[str]] = re.compile(
        re.escape(CALL_BEGIN)
        + r"(?P<type>.*?)"
        + re.escape(SEP)
        + r"(?P<name>.*?)\n```json\n(?P<args>.*?)\n```"
        + re.escape(CALL_END),
        re.S,
    )

    def parse_text(self, text: str) -> ParsedReply:
        if self.opener not in text:
            return ParsedReply(text.strip())
        content, _, rest = text.partition(self.opener)
        block, closed, after = rest.partition(self.closer)
        calls, invalid = [], []
        for m in self._CALL.finditer(block):
            try:
                calls.append(parsed_call(m.group("name").strip(), m.group("args")))
            except ValueError as err:
                invalid.append(invalid_call(m.group(0), err))
        if not closed or (not calls and not invalid):
            named = re.search(re.escape(SEP) + r"([^\n<]+)", block)
            reason = ValueError(f"tool calls not closed with {self.closer}")
            invalid.append(invalid_call(block, reason, named.group(1).strip() if named else None))
        return ParsedReply((content + after).strip(), calls, invalid)

"""`mistral`: ``[TOOL_CALLS] [{"name": N, "arguments": {...}}, ...]``, one JSON array of calls
after the marker; text before it is content."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from ..errors import InvalidInputError
from .base import ParsedReply, ToolCallFormat, invalid_call, json_values, parsed_call


@dataclass(frozen=True)
class Mistral(ToolCallFormat):
    name: ClassVar[str] = "mistral"
    opener: ClassVar[str] = "[TOOL_CALLS]"
    detect_rank: ClassVar[int] = 20

    name_prefix: str = '[TOOL_CALLS] [{"name": "'
    args_prefix: str = '", "arguments": '
    args_suffix: str = "}"
    block_end: str = "]"
    separator: str = ", "
    next_prefix: str | None = '{"name": "'

    def parse_text(self, text: str) -> ParsedReply:
        if self.opener not in text:
            return ParsedReply(text.strip())
        content, _, rest = text.partition(self.opener)
        values, error = json_values(rest)
        if not values or not isinstance(values[0][2], list):
            reason = error or "no JSON array of calls after " + self.opener
            return ParsedReply(content.strip(), [], [invalid_call(rest, ValueError(reason))])
        calls, invalid = [], []
        for item in values[0][2]:
            try:
                if not isinstance(item, dict):
                    raise InvalidInputError("a tool call is a JSON object")
                calls.append(parsed_call(item.get("name"), item.get("arguments", {})))
            except ValueError as err:
                invalid.append(invalid_call(json.dumps(item), err))
        tail = rest[values[0][1] :]
        return ParsedReply((content + tail).strip(), calls, invalid)

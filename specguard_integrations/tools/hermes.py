"""`hermes` (Qwen2.5, Qwen3, Hermes, the bundled pair): ``<tool_call>{"name": N, "arguments":
{...}}</tool_call>``, one block per call, repeated for several calls."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import InvalidInputError
from .base import ParsedReply, ToolCallFormat, invalid_call, parsed_call


@dataclass(frozen=True)
class Hermes(ToolCallFormat):
    name: ClassVar[str] = "hermes"
    opener: ClassVar[str] = "<tool_call>"
    closer: ClassVar[str] = "</tool_call>"
    block_per_call: ClassVar[bool] = True
    detect_rank: ClassVar[int] = 30

    name_prefix: str = '<tool_call>{"name": "'
    args_prefix: str = '", "arguments": '
    args_suffix: str = "}"
    call_end: str = "</tool_call>"
    separator: str = "\n"

    def parse_text(self, text: str) -> ParsedReply:
        calls: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        pattern = re.compile(
            re.escape(self.opener) + r"(.*?)(?:" + re.escape(self.closer) + r"|$)", re.S
        )
        for m in pattern.finditer(text):
            raw = m.group(1).strip()
            try:
                if not m.group(0).endswith(self.closer):
                    raise InvalidInputError(f"tool call not closed with {self.closer}")
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise InvalidInputError("a tool call is a JSON object")
                args = obj.get("arguments", obj.get("parameters", {}))
                calls.append(parsed_call(obj.get("name"), args))
            except ValueError as err:
                invalid.append(invalid_call(raw, err))
        return ParsedReply(pattern.sub("", text).strip(), calls, invalid)

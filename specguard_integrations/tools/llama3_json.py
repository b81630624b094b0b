"""`llama3_json` (Llama 3.1-3.3): the whole turn is ``{"name": N, "parameters": {...}}``,
several joined by ``; ``, optionally after ``<|python_tag|>``; no block markers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from ..errors import InvalidInputError
from .base import ParsedReply, ToolCallFormat, invalid_call, json_values, parsed_call


@dataclass(frozen=True)
class Llama3Json(ToolCallFormat):
    """A reply that does not start with ``{`` is text."""

    name: ClassVar[str] = "llama3_json"
    detect_rank: ClassVar[int] = 90

    name_prefix: str = '{"name": "'
    args_prefix: str = '", "parameters": '
    args_suffix: str = "}"
    separator: str = "; "

    def parse_text(self, text: str) -> ParsedReply:
        body = text.strip().removeprefix("<|python_tag|>").strip()
        if not body.startswith("{"):
            return ParsedReply(text.strip())
        values, error = json_values(body)
        calls, invalid, rest = [], [], body
        for start, end, value in values:
            try:
                if not isinstance(value, dict):
                    raise InvalidInputError("a tool call is a JSON object")
                args = value.get("parameters", value.get("arguments", {}))
                calls.append(parsed_call(value.get("name"), args))
            except ValueError as err:
                invalid.append(invalid_call(body[start:end], err))
            rest = rest.replace(body[start:end], "", 1)
        if error is not None and not calls:
            invalid.append(invalid_call(body, ValueError(error)))
            rest = ""
        return ParsedReply(rest.replace(";", " ").strip(), calls, invalid)

    @classmethod
    def detects(cls, rendered: str, at: int) -> bool:
        """A bare ``{"name": "`` right before the name, with no block marker."""
        return re.search(r'\{\s*"name"\s*:\s*"$', rendered[:at]) is not None

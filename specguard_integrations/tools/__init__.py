"""Tool calls in each model family's own format: one class per format (`base.ToolCallFormat`,
vLLM's tool-parser names) holding its markers, parser, renderer, the pieces its grammar is built
from and its detection hint, registered by name as it is defined. A new format is one class
(one new module here, or one class in user code):

    from specguard_integrations.tools import ToolCallFormat

    @dataclass(frozen=True)
    class MyFormat(ToolCallFormat):
        name: ClassVar[str] = "my_format"        # now a valid `tool_call_format`
        opener: ClassVar[str] = "<call>"
        closer: ClassVar[str] = "</call>"
        name_prefix: str = '<call>{"name": "'
        args_prefix: str = '", "arguments": '
        args_suffix: str = "}"
        call_end: str = "</call>"

        def parse_text(self, text): ...

`templates.detect` reads a tokenizer's format off its chat template; `grammar` builds the
grammar of a forced or optional call (one, or several with ``parallel_tool_calls``).
"""

from __future__ import annotations

from .base import (
    ParsedReply,
    ToolCallFormat,
    format_by_name,
    new_call_id,
    registered,
    unregister,
)

# the built-in formats register as they are imported
from .deepseek_v3 import DeepSeekV3
from .hermes import Hermes
from .llama3_json import Llama3Json
from .mistral import Mistral

__all__ = [
    "DeepSeekV3",
    "Hermes",
    "Llama3Json",
    "Mistral",
    "ParsedReply",
    "ToolCallFormat",
    "format_by_name",
    "new_call_id",
    "registered",
    "unregister",
]

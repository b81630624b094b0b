"""A compact ReAct system header for models with small context windows.

LlamaIndex's default ReAct header is about 2,000 characters: more than a small model's whole
window (1,376 tokens in the bundled tokenizer against its 512). `react_formatter()` keeps the
same protocol (`Thought:` / `Action:` / `Action Input:` with JSON arguments, `Observation:`,
then `Thought:` / `Answer:`), so LlamaIndex's own `ReActOutputParser` reads the replies, and
fills in the same `{tool_desc}` and `{tool_names}`. The bundled pair is trained on this header.

    agent = ReActAgent(tools=[...], llm=SpecGuardLLM(), formatter=react_formatter())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llama_index.core.agent.react.formatter import ReActChatFormatter

REACT_HEADER = (
    "Tools:\n{tool_desc}\n"
    "To use a tool write Thought, Action (one of {tool_names}) and Action Input (JSON), "
    "then wait for the Observation. To answer write Thought and Answer."
)


def react_formatter(header: str = REACT_HEADER) -> ReActChatFormatter:
    """A `ReActChatFormatter` with the compact header (observations as user turns)."""
    from llama_index.core.agent.react.formatter import ReActChatFormatter

    return ReActChatFormatter.from_defaults(system_header=header)

"""Translation between LangChain objects and the engine's records; no model logic here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._threads import stream_in_thread
from ..chat import tool_call_dict
from ..errors import InvalidInputError

__all__ = ["stream_in_thread"]

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatGenerationChunk

    from .._adapter import SpecGuardParams
    from ..types import GenerationResult, StepRecord

STEP_EVENT = "specguard_step"
PROVIDER = "specguard"
# content blocks that carry no text to render (the call travels in tool_calls; reasoning of a
# past turn is not shown to the model again, as chat templates drop it)
_SKIPPED_BLOCKS = ("tool_use", "tool_call", "reasoning", "thinking")


def step_payload(record: StepRecord) -> dict[str, Any]:
    """A step record as plain JSON data (metadata, events, traces)."""
    return record.model_dump(mode="json")


def response_metadata(
    result: GenerationResult, owner: SpecGuardParams, has_tool_calls: bool
) -> dict[str, Any]:
    """`model_name` is the target that ran; the draft is named beside it."""
    draft, target = owner.model_names()
    return {
        "model_name": target,
        "model_provider": PROVIDER,
        "finish_reason": result.openai_finish_reason(has_tool_calls),
        "specguard": {**result.summary(), "draft_model": draft, "target_model": target},
        "specguard_steps": result.steps_json(),
    }


def usage_metadata(result: GenerationResult) -> dict[str, Any]:
    return result.usage()


def content_text(message: BaseMessage, where: str) -> str:
    """Text of a message whose content is a string or a list of text blocks."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in _SKIPPED_BLOCKS:
            continue
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise InvalidInputError(
                f"{where}: unsupported content block of type {kind!r}: text only"
            )
    return "".join(parts)


def to_chat_dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> chat-template dicts (system, user, assistant + tool_calls, tool)."""
    from langchain_core.messages import (
        AIMessage,
        ChatMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )

    roles = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = next((r for cls, r in roles.items() if isinstance(m, cls)), None)
        d: dict[str, Any]
        if isinstance(m, ToolMessage):
            d = {"role": "tool", "content": content_text(m, where), "tool_call_id": m.tool_call_id}
        elif isinstance(m, ChatMessage):
            d = {"role": m.role, "content": content_text(m, where)}
        elif role is not None:
            d = {"role": role, "content": content_text(m, where)}
        else:
            raise InvalidInputError(f"{where}: unsupported message type {type(m).__name__}")
        if isinstance(m, AIMessage) and m.tool_calls:
            d["tool_calls"] = [
                tool_call_dict(tc.get("id"), tc["name"], tc["args"]) for tc in m.tool_calls
            ]
        out.append(d)
    return out


def chunk(content: str = "", reasoning: str = "") -> ChatGenerationChunk:
    """A chat chunk with content and/or a reasoning delta (in ``reasoning_content``)."""
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk

    extra = {"reasoning_content": reasoning} if reasoning else {}
    return ChatGenerationChunk(message=AIMessageChunk(content=content, additional_kwargs=extra))


def emit_step(run_manager: CallbackManagerForLLMRun | None, record: StepRecord) -> None:
    """Send the `specguard_step` custom event for a step to the run's handlers."""
    from langchain_core.callbacks import CallbackManager

    if run_manager is None or not run_manager.handlers:
        return
    manager = CallbackManager(
        handlers=run_manager.handlers, tags=run_manager.tags, metadata=run_manager.metadata
    )
    manager.on_custom_event(STEP_EVENT, step_payload(record), run_id=run_manager.run_id)


async def aemit_step(run_manager: AsyncCallbackManagerForLLMRun | None, record: StepRecord) -> None:
    """`emit_step` for async runs."""
    from langchain_core.callbacks import AsyncCallbackManager

    if run_manager is None or not run_manager.handlers:
        return
    manager = AsyncCallbackManager(
        handlers=run_manager.handlers, tags=run_manager.tags, metadata=run_manager.metadata
    )
    await manager.on_custom_event(STEP_EVENT, step_payload(record), run_id=run_manager.run_id)

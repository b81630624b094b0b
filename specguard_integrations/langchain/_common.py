"""Translation between LangChain objects and the engine's records; no model logic here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._threads import stream_in_thread

__all__ = ["stream_in_thread"]

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.messages import BaseMessage

    from ..types import GenerationResult, StepRecord

STEP_EVENT = "specguard_step"
PROVIDER = "specguard"

_FINISH = {
    "eos": "stop",
    "final_answer": "stop",
    "stop": "stop",
    "tool_call": "tool_calls",
    "max_steps": "length",
    "max_new_tokens": "length",
    "context_window": "length",
}


def finish_reason(result: GenerationResult, has_tool_calls: bool) -> str:
    return "tool_calls" if has_tool_calls else _FINISH[result.finish_reason]


def step_payload(record: StepRecord) -> dict[str, Any]:
    """A step record as plain JSON data (metadata, events, traces)."""
    return record.model_dump(mode="json")


def response_metadata(
    result: GenerationResult, model_name: str, has_tool_calls: bool
) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "model_provider": PROVIDER,
        "finish_reason": finish_reason(result, has_tool_calls),
        "specguard": result.summary(),
        "specguard_steps": [step_payload(s) for s in result.steps],
    }


def usage_metadata(result: GenerationResult) -> dict[str, Any]:
    out = result.output_tokens
    return {
        "input_tokens": result.prompt_tokens,
        "output_tokens": out,
        "total_tokens": result.prompt_tokens + out,
        "output_token_details": {"draft": result.draft_tokens, "target": result.target_tokens},
    }


def content_text(message: BaseMessage) -> str:
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
        elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call"):
            continue  # the call itself travels in message.tool_calls
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"unsupported message content block of type {kind!r}: text only")
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

    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": content_text(m)})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": content_text(m)})
        elif isinstance(m, AIMessage):
            d: dict[str, Any] = {"role": "assistant", "content": content_text(m)}
            if m.tool_calls:
                d["tool_calls"] = [
                    {
                        "id": tc.get("id"),
                        "type": "function",
                        "function": {"name": tc["name"], "arguments": tc["args"]},
                    }
                    for tc in m.tool_calls
                ]
            out.append(d)
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "content": content_text(m), "tool_call_id": m.tool_call_id})
        elif isinstance(m, ChatMessage):
            out.append({"role": m.role, "content": content_text(m)})
        else:
            raise ValueError(f"unsupported message type {type(m).__name__}")
    return out


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

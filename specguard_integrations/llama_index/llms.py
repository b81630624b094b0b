"""`SpecGuardLLM` for LlamaIndex: a function-calling LLM backed by the SpecGuard engine.

Translation only. Messages are rendered through the model's chat template; tool calls come back
as `ToolCallBlock`s; each decided step is sent as a `SpecGuardStepEvent` through the LlamaIndex
instrumentation dispatcher (inside the LLM call's span) and all records are in the response's
`additional_kwargs["specguard_steps"]`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import ConfigDict, Field, PrivateAttr

from .._adapter import EngineOwner, llm_params
from .._threads import stream_in_thread
from ..chat import ChatCall, ParsedReply, parse_reply, prepare_chat
from ..config import SpecGuardConfig

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

    from ..engine.loop import SpecGuard, StepStream
    from ..types import GenerationResult, StepRecord

dispatcher = get_dispatcher(__name__)


class SpecGuardStepEvent(BaseEvent):
    """One decided SpecGuard step: its record (text, source, scores, decision, timings)."""

    model_name: str
    record: dict[str, Any]

    @classmethod
    def class_name(cls) -> str:
        return "SpecGuardStepEvent"


def _dicts(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex messages -> chat-template dicts."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
        text = "".join(b.text for b in m.blocks if isinstance(b, TextBlock))
        d: dict[str, Any] = {"role": "assistant" if role == "chatbot" else role, "content": text}
        calls = [b for b in m.blocks if isinstance(b, ToolCallBlock)]
        calls_kw = m.additional_kwargs.get("tool_calls") or []
        if calls or calls_kw:
            d["tool_calls"] = [
                {
                    "id": b.tool_call_id,
                    "type": "function",
                    "function": {"name": b.tool_name, "arguments": b.tool_kwargs},
                }
                for b in calls
            ] + [
                {
                    "id": c.tool_id,
                    "type": "function",
                    "function": {"name": c.tool_name, "arguments": c.tool_kwargs},
                }
                for c in calls_kw
                if isinstance(c, ToolSelection)
            ]
        if role == "tool":
            d["tool_call_id"] = m.additional_kwargs.get("tool_call_id")
        out.append(d)
    return out


class SpecGuardLLM(EngineOwner, FunctionCallingLLM):
    """SpecGuard step-level speculative decoding as a LlamaIndex LLM.

    Works in query engines, `ReActAgent` and `FunctionAgent`. Construction is cheap; weights load
    on first use and are shared with the LangChain classes in the same process.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    draft: str | None = Field(None, description="Draft model id or path (None: bundled pair).")
    target: str | None = Field(None, description="Target model id or path (None: bundled pair).")
    config: SpecGuardConfig = Field(default_factory=SpecGuardConfig)
    temperature: float | None = Field(None, description="Draft temperature; 0 runs greedy, k=1.")
    max_tokens: int | None = Field(None, description="Maximum generated tokens.")
    device: str = "auto"
    dtype: str = "auto"

    _engine: SpecGuard | None = PrivateAttr(None)

    @classmethod
    def class_name(cls) -> str:
        return "SpecGuardLLM"

    @property
    def metadata(self) -> LLMMetadata:
        lm = getattr(self.engine.target, "lm", None) or getattr(self.engine.draft, "lm", None)
        window = int(getattr(lm, "context_window", 2048))
        return LLMMetadata(
            context_window=window,
            num_output=self._config().max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.engine.target.name,
        )

    # ------------------------------------------------------------ plumbing
    def _config(self, **kwargs: Any) -> SpecGuardConfig:
        return llm_params(
            self.config,
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )

    def _chat_call(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatCall:
        tools = kwargs.get("tools")
        choice = kwargs.get("tool_choice")
        if choice is None and kwargs.get("tool_required"):
            choice = "required"
        return prepare_chat(
            self.engine, _dicts(messages), self._config(**kwargs), tools=tools, tool_choice=choice
        )

    def _emit(self, record: StepRecord) -> None:
        dispatcher.event(
            SpecGuardStepEvent(model_name=self.engine.target.name, record=record.model_dump())
        )

    def _extra(self, result: GenerationResult) -> dict[str, Any]:
        return {
            "specguard": result.summary(),
            "specguard_steps": [s.model_dump(mode="json") for s in result.steps],
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.output_tokens,
            "total_tokens": result.prompt_tokens + result.output_tokens,
        }

    def _chat_message(self, call: ChatCall, result: GenerationResult) -> ChatMessage:
        text = call.prefix + result.text
        parsed = parse_reply(text, call.fmt) if call.fmt else ParsedReply(text.strip())
        blocks: list[Any] = [TextBlock(text=parsed.content)] if parsed.content else []
        blocks += [
            ToolCallBlock(tool_call_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"])
            for c in parsed.tool_calls
        ]
        blocks += [
            ToolCallBlock(tool_call_id=c["id"], tool_name=c["name"] or "", tool_kwargs=c["args"])
            for c in parsed.invalid_tool_calls
        ]
        if not blocks:
            blocks = [TextBlock(text="")]
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)

    def _run(self, prompt: str, cfg: SpecGuardConfig, special: bool) -> StepStream:
        return self.engine.stream(prompt, config=cfg, add_special_tokens=special)

    # ------------------------------------------------------------ completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        stream = self._run(prompt, self._config(**kwargs), True)
        for record in stream:
            self._emit(record)
        assert stream.result is not None
        return CompletionResponse(
            text=stream.result.text, additional_kwargs=self._extra(stream.result)
        )

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        stream = self._run(prompt, self._config(**kwargs), True)

        def gen() -> Generator[CompletionResponse, None, None]:
            text = ""
            for record in stream:
                self._emit(record)
                text += record.text
                yield CompletionResponse(text=text, delta=record.text)
            assert stream.result is not None
            yield CompletionResponse(
                text=stream.result.text, delta="", additional_kwargs=self._extra(stream.result)
            )

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        stream = self._run(prompt, self._config(**kwargs), True)
        async for record in stream_in_thread(stream):
            self._emit(record)
        assert stream.result is not None
        return CompletionResponse(
            text=stream.result.text, additional_kwargs=self._extra(stream.result)
        )

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        stream = self._run(prompt, self._config(**kwargs), True)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            text = ""
            async for record in stream_in_thread(stream):
                self._emit(record)
                text += record.text
                yield CompletionResponse(text=text, delta=record.text)
            assert stream.result is not None
            yield CompletionResponse(
                text=stream.result.text, delta="", additional_kwargs=self._extra(stream.result)
            )

        return gen()

    # ------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._chat_call(messages, kwargs)
        stream = self._run(call.prompt, call.config, False)
        for record in stream:
            self._emit(record)
        assert stream.result is not None
        return ChatResponse(
            message=self._chat_message(call, stream.result),
            additional_kwargs=self._extra(stream.result),
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call = self._chat_call(messages, kwargs)
        stream = self._run(call.prompt, call.config, False)

        def gen() -> Generator[ChatResponse, None, None]:
            text = ""
            for record in stream:
                self._emit(record)
                delta = "" if call.fmt is not None else record.text
                text += delta
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta
                )
            assert stream.result is not None
            yield ChatResponse(
                message=self._chat_message(call, stream.result),
                delta="",
                additional_kwargs=self._extra(stream.result),
            )

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._chat_call(messages, kwargs)
        stream = self._run(call.prompt, call.config, False)
        async for record in stream_in_thread(stream):
            self._emit(record)
        assert stream.result is not None
        return ChatResponse(
            message=self._chat_message(call, stream.result),
            additional_kwargs=self._extra(stream.result),
        )

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        call = self._chat_call(messages, kwargs)
        stream = self._run(call.prompt, call.config, False)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            text = ""
            async for record in stream_in_thread(stream):
                self._emit(record)
                delta = "" if call.fmt is not None else record.text
                text += delta
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta
                )
            assert stream.result is not None
            yield ChatResponse(
                message=self._chat_message(call, stream.result),
                delta="",
                additional_kwargs=self._extra(stream.result),
            )

        return gen()

    # ------------------------------------------------------------ tools
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        return {
            "messages": messages,
            "tools": [t.metadata.to_openai_tool() for t in tools] or None,
            "tool_required": tool_required,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise ValueError(f"expected at least one tool call, got: {response.message.content!r}")
        return [
            ToolSelection(
                tool_id=b.tool_call_id or "",
                tool_name=b.tool_name,
                tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {},
            )
            for b in calls
        ]

"""`SpecGuardLLM` for LlamaIndex: a function-calling LLM backed by the SpecGuard engine.

Translation only. Messages are rendered through the model's chat template; tool calls come back
as `ToolCallBlock`s; each decided step is sent as a `SpecGuardStepEvent` through the LlamaIndex
instrumentation dispatcher, inside the LLM call's span on every path (streaming included), and
all records are in the response's `additional_kwargs["specguard_steps"]`.
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
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import ConfigDict, Field

from .._adapter import SpecGuardParams
from .._records import Records, arun_call, run_call
from ..chat import ChatCall, ReplyStream, reasoning_split, strip_special
from ..chat import tool_call_dict as _tool_call
from ..errors import InvalidInputError

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

    from ..types import GenerationResult, StepRecord

dispatcher = get_dispatcher(__name__)


class SpecGuardStepEvent(BaseEvent):
    """One decided SpecGuard step: its record (text, source, scores, decision, timings)."""

    model_name: str
    record: dict[str, Any]

    @classmethod
    def class_name(cls) -> str:
        return "SpecGuardStepEvent"


def to_chat_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex messages -> chat-template dicts; a block that is not text is an error."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
        texts, calls = [], []
        for block in m.blocks:
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ToolCallBlock):
                calls.append(_tool_call(block.tool_call_id, block.tool_name, block.tool_kwargs))
            elif not isinstance(block, ThinkingBlock):  # past reasoning is not shown again
                kind = getattr(block, "block_type", type(block).__name__)
                raise InvalidInputError(
                    f"messages[{i}]: unsupported content block of type {kind!r}: text only"
                )
        calls += [
            _tool_call(c.tool_id, c.tool_name, c.tool_kwargs)
            for c in m.additional_kwargs.get("tool_calls") or []
            if isinstance(c, ToolSelection)
        ]
        d: dict[str, Any] = {
            "role": "assistant" if role == "chatbot" else role,
            "content": "".join(texts),
        }
        if calls:
            d["tool_calls"] = calls
        if role == "tool":
            d["tool_call_id"] = m.additional_kwargs.get("tool_call_id")
        out.append(d)
    return out


class SpecGuardLLM(SpecGuardParams, FunctionCallingLLM):
    """SpecGuard step-level speculative decoding as a LlamaIndex LLM.

    Works in query engines, `ReActAgent` and `FunctionAgent`. Construction is cheap and
    validates every parameter (HuggingFaceLLM's ``model_name``, ``max_new_tokens``,
    ``generate_kwargs``, ``model_kwargs``, ``tokenizer_kwargs`` are mapped; any other unknown
    name raises). Weights load on first use and are shared with the LangChain classes in the
    same process. ``context_window`` / ``num_output`` override what `metadata` reports.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    context_window: int | None = Field(
        None, ge=1, description="Reported context window (default: the models' own)."
    )

    @classmethod
    def class_name(cls) -> str:
        return "SpecGuardLLM"

    @property
    def metadata(self) -> LLMMetadata:
        if self.context_window is not None:
            window = self.context_window
        else:
            window = self.engine.context_window or 2048
        return LLMMetadata(
            context_window=window,
            num_output=self.call_config({}).max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.model_names()[1],
        )

    # ------------------------------------------------------------ plumbing
    def _chat_start(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[ChatCall, Records]:
        """The rendered call and its records (the adapters' one call path); LlamaIndex's
        ``tool_required`` is ``tool_choice="required"``."""
        if kwargs.pop("tool_required", False) and kwargs.get("tool_choice") is None:
            kwargs["tool_choice"] = "required"
        return self.start_chat(to_chat_dicts(messages), kwargs)

    def _emitter(self) -> Any:
        """A step-event sender bound to the current span: streams run after the decorated call
        returned, when the span is no longer the active one."""
        span, name = active_span_id.get(), self.model_names()[1]

        def emit(record: StepRecord) -> None:
            dispatcher.event(
                SpecGuardStepEvent(model_name=name, record=record.model_dump(), span_id=span)
            )

        return emit

    def _extra(self, result: GenerationResult) -> dict[str, Any]:
        draft, target = self.model_names()
        return {
            "specguard": {**result.summary(), "draft_model": draft, "target_model": target},
            "specguard_steps": result.steps_json(),
            "prompt_tokens": result.prompt_tokens,
            "cached_tokens": result.cached_tokens,
            "completion_tokens": result.output_tokens,
            "total_tokens": result.prompt_tokens + result.output_tokens,
        }

    def _text(self, text: str) -> str:
        """Completion text as written, without special tokens."""
        return strip_special(text, self.engine.special_texts)

    def _chat_response(self, call: ChatCall, result: GenerationResult) -> ChatResponse:
        parsed = call.parse(result.text, result.budget_cut)
        content, extra = parsed.content, self._extra(result)
        blocks: list[Any] = []
        if self.reasoning:
            reasoning, content = reasoning_split(call, result.text, result.step_texts)
            if reasoning:
                blocks.append(ThinkingBlock(content=reasoning))
                extra["reasoning_content"] = reasoning
        blocks += [TextBlock(text=content)] if content else []
        blocks += [
            ToolCallBlock(tool_call_id=c["id"], tool_name=c["name"] or "", tool_kwargs=c["args"])
            for c in parsed.tool_calls + parsed.invalid_tool_calls
        ]
        message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks or [TextBlock(text="")])
        return ChatResponse(message=message, additional_kwargs=extra)

    # ------------------------------------------------------------ completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = run_call(self.start_call(prompt, kwargs), self._emitter())
        return CompletionResponse(
            text=self._text(result.text), additional_kwargs=self._extra(result)
        )

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        stream = self.start_call(prompt, kwargs)
        out = _Streamer(self, None)

        def gen() -> Generator[CompletionResponse, None, None]:
            yield from (out.completion_step(record) for record in stream)
            yield out.completion_last(stream.result)

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        result = await arun_call(self.start_call(prompt, kwargs), self._emitter())
        return CompletionResponse(
            text=self._text(result.text), additional_kwargs=self._extra(result)
        )

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        stream = self.start_call(prompt, kwargs)
        out = _Streamer(self, None)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            async for record in stream:
                yield out.completion_step(record)
            yield out.completion_last(stream.result)

        return gen()

    # ------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call, records = self._chat_start(messages, kwargs)
        return self._chat_response(call, run_call(records, self._emitter()))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call, records = self._chat_start(messages, kwargs)
        result = await arun_call(records, self._emitter())
        return self._chat_response(call, result)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call, stream = self._chat_start(messages, kwargs)
        out = _Streamer(self, call)

        def gen() -> Generator[ChatResponse, None, None]:
            yield from (out.chat_step(record) for record in stream)
            yield out.chat_last(stream.result)

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        call, stream = self._chat_start(messages, kwargs)
        out = _Streamer(self, call)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            async for record in stream:
                yield out.chat_step(record)
            yield out.chat_last(stream.result)

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
            "parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise InvalidInputError(
                f"expected at least one tool call, got: {response.message.content!r}"
            )
        return [
            ToolSelection(
                tool_id=b.tool_call_id or "",
                tool_name=b.tool_name,
                tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {},
            )
            for b in calls
        ]


class _Streamer:
    """One streamed reply: each step's event (in the call's span), its deltas, and the text or
    message so far; the last response carries the whole message and the step records."""

    def __init__(self, llm: SpecGuardLLM, call: ChatCall | None) -> None:
        self.llm, self.call, self.emit = llm, call, llm._emitter()
        self.reply = ReplyStream(call, llm.reasoning) if call is not None else None
        self.content = self.reasoning = ""

    def completion_step(self, record: StepRecord) -> CompletionResponse:
        self.emit(record)
        delta = self.llm._text(record.text)
        self.content += delta
        return CompletionResponse(text=self.content, delta=delta)

    def completion_last(self, result: GenerationResult | None) -> CompletionResponse:
        assert result is not None
        extra = self.llm._extra(result)
        return CompletionResponse(text=self.content, delta="", additional_kwargs=extra)

    def _partial(self, content: str, reasoning: str) -> ChatResponse:
        self.content += content
        self.reasoning += reasoning
        blocks: list[Any] = [ThinkingBlock(content=self.reasoning)] if self.reasoning else []
        blocks.append(TextBlock(text=self.content))
        message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)
        extra = {"reasoning_delta": reasoning} if reasoning else {}
        return ChatResponse(message=message, delta=content, additional_kwargs=extra)

    def chat_step(self, record: StepRecord) -> ChatResponse:
        assert self.reply is not None
        self.emit(record)
        return self._partial(*self.reply.step(record.text, record.finish))

    def chat_last(self, result: GenerationResult | None) -> ChatResponse:
        assert result is not None and self.reply is not None and self.call is not None
        last = self._partial(*self.reply.finish(result.text, result.step_texts))
        final = self.llm._chat_response(self.call, result)
        return ChatResponse(
            message=final.message, delta=last.delta, additional_kwargs=final.additional_kwargs
        )


LlamaIndexSpecGuardLLM = SpecGuardLLM  # an unambiguous name beside LangChain code

"""`ChatSpecGuard`: SpecGuard as a LangChain chat model.

Translation only: LangChain messages are rendered through the model's chat template, the engine
runs, and its step records come back as `response_metadata["specguard_steps"]`, usage metadata,
and one `specguard_step` custom event per decided step.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .._adapter import EngineOwner, llm_params
from ..chat import ChatCall, ParsedReply, parse_reply, prepare_chat
from ..config import SpecGuardConfig
from . import _common

if TYPE_CHECKING:
    from ..engine.loop import SpecGuard
    from ..types import GenerationResult, StepRecord


# `stream`/`astream` in langchain-core 1.x call `_stream` without a run manager; the caller's
# config travels here so step events still reach its handlers (and `astream_events`).
_STREAM_CONFIG: ContextVar[RunnableConfig | None] = ContextVar("specguard_stream", default=None)
_RUN_PREFIX = "lc_run--"
_M = TypeVar("_M", CallbackManager, AsyncCallbackManager)


def _run_id_of(chunk: ChatGenerationChunk) -> UUID | None:
    """The chat run's id, which langchain-core writes into the first chunk's message id."""
    mid = chunk.message.id or ""
    try:
        return UUID(mid[len(_RUN_PREFIX) :]) if mid.startswith(_RUN_PREFIX) else None
    except ValueError:
        return None


class ChatSpecGuard(EngineOwner, BaseChatModel):
    """SpecGuard step-level speculative decoding as a LangChain chat model.

    Construction is cheap: the draft and target load on first use and are shared with every
    other object pointing at the same weights. Without `draft`/`target` the bundled offline pair
    is used.

    Example:
        .. code-block:: python

            from specguard_integrations.langchain import ChatSpecGuard

            llm = ChatSpecGuard(draft="Qwen/Qwen2.5-1.5B-Instruct",
                                target="Qwen/Qwen2.5-7B-Instruct", temperature=0.7)
            msg = llm.invoke("Solve 2x + 3 = 11.")
            msg.response_metadata["specguard_steps"]   # one record per step
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    draft: str | None = Field(None, description="Draft model id or path (None: bundled pair).")
    target: str | None = Field(None, description="Target model id or path (None: bundled pair).")
    model_name: str | None = Field(
        None, alias="model", description="Name reported as the model (default: the target's)."
    )
    config: SpecGuardConfig = Field(default_factory=SpecGuardConfig)
    temperature: float | None = Field(None, description="Draft temperature; 0 runs greedy, k=1.")
    max_tokens: int | None = Field(None, description="Maximum generated tokens.")
    seed: int | None = None
    stop: list[str] | None = Field(None, alias="stop_sequences")
    device: str = "auto"
    dtype: str = "auto"
    streaming: bool = False

    _engine: SpecGuard | None = PrivateAttr(None)

    # ------------------------------------------------------------ identity
    @property
    def _llm_type(self) -> str:
        return "specguard-chat"

    def _model_name(self, override: str | None = None) -> str:
        if override:
            return override
        if self.model_name:
            return self.model_name
        if self._engine is not None:
            return self._engine.target.name
        return self.target or "specguard-bundled/target"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "draft": self.draft,
            "target": self.target,
            "model_name": self._model_name(),
            "config": self.config.model_dump(mode="json"),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=_common.PROVIDER,
            ls_model_name=self._model_name(kwargs.get("model")),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if ls_stop := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = ls_stop
        return params

    # ------------------------------------------------------------ tools
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools, rendered through the chat template; `tool_choice` ("auto", "any",
        "required", a tool name) forces a call by starting the reply with the call's text."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Structured output through a forced call of a tool whose parameters are `schema`.

        All three methods decode the same way (a JSON object in the tool-call block of the chat
        template); they differ only in how the schema is given. `json_mode` needs a schema.
        Decoding is not grammar-constrained, so `strict` is accepted but cannot be guaranteed:
        a reply that does not fit the schema parses to None (or raises with `include_raw`).
        """
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise ValueError(f"method: unknown value {method!r}")
        if schema is None:
            raise ValueError("with_structured_output needs a schema")
        return super().with_structured_output(schema, include_raw=include_raw)

    # ------------------------------------------------------------ calls
    def _call(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[ChatCall, tuple[str, ...], str]:
        tools = kwargs.pop("tools", None)
        tool_choice = kwargs.pop("tool_choice", None)
        override = kwargs.pop("model", None)
        if override is not None and override != self._model_name():
            raise ValueError(
                f"model={override!r}: a per-call model override is not supported; "
                "construct another ChatSpecGuard for another draft/target pair"
            )
        kwargs.pop("ls_structured_output_format", None)
        cfg = llm_params(
            self.config,
            temperature=kwargs.pop("temperature", self.temperature),
            max_tokens=kwargs.pop("max_tokens", self.max_tokens),
            seed=kwargs.pop("seed", self.seed),
        )
        if kwargs:
            raise ValueError(f"unsupported call arguments: {sorted(kwargs)}")
        call = prepare_chat(
            self.engine, _common.to_chat_dicts(messages), cfg, tools=tools, tool_choice=tool_choice
        )
        stops = tuple(stop or self.stop or ())
        return call, stops, self._model_name(override)

    def _message(
        self, call: ChatCall, result: GenerationResult, model_name: str
    ) -> tuple[AIMessage, ParsedReply]:
        text = call.prefix + result.text
        parsed = parse_reply(text, call.fmt) if call.fmt is not None else ParsedReply(text.strip())
        msg = AIMessage(
            content=parsed.content,
            tool_calls=parsed.tool_calls,
            invalid_tool_calls=parsed.invalid_tool_calls,
            response_metadata=_common.response_metadata(
                result, model_name, bool(parsed.tool_calls)
            ),
            usage_metadata=_common.usage_metadata(result),
        )
        return msg, parsed

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, stops, name = self._call(messages, stop, kwargs)
        stream = self.engine.stream(
            call.prompt, config=call.config, stop=stops, add_special_tokens=False
        )
        for record in stream:
            _common.emit_step(run_manager, record)
        assert stream.result is not None
        msg, _ = self._message(call, stream.result, name)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, stops, name = self._call(messages, stop, kwargs)
        stream = self.engine.stream(
            call.prompt, config=call.config, stop=stops, add_special_tokens=False
        )
        async for record in _common.stream_in_thread(stream):
            await _common.aemit_step(run_manager, record)
        assert stream.result is not None
        msg, _ = self._message(call, stream.result, name)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    # ------------------------------------------------------------ streaming
    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        token = _STREAM_CONFIG.set(ensure_config(config))
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            _reset(token)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        token = _STREAM_CONFIG.set(ensure_config(config))
        try:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk
        finally:
            _reset(token)

    def _stream_manager(self, chunk: ChatGenerationChunk, kind: type[_M]) -> tuple[_M, UUID] | None:
        """A callback manager (sync or async `kind`) for the caller's config, and the run id."""
        config = _STREAM_CONFIG.get()
        run_id = _run_id_of(chunk)
        if config is None or run_id is None:
            return None
        manager = kind.configure(
            config.get("callbacks"),
            self.callbacks,
            self.verbose,
            config.get("tags"),
            self.tags,
            config.get("metadata"),
            self.metadata,
        )
        return manager, run_id

    def _step_chunk(self, call: ChatCall, record: StepRecord) -> ChatGenerationChunk:
        """One chunk per decided step; tool-call text is held back for the final chunk."""
        held = call.fmt is not None and (record.finish == "tool_call" or bool(call.prefix))
        return ChatGenerationChunk(message=AIMessageChunk(content="" if held else record.text))

    def _final_chunk(
        self, call: ChatCall, result: GenerationResult, name: str
    ) -> ChatGenerationChunk:
        msg, parsed = self._message(call, result, name)
        streamed_text = call.fmt is None or not (
            call.prefix or parsed.tool_calls or parsed.invalid_tool_calls
        )
        content = "" if streamed_text else parsed.content
        chunks = [
            {"name": tc["name"], "args": _json(tc["args"]), "id": tc["id"], "index": i}
            for i, tc in enumerate(parsed.tool_calls)
        ]
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=content,
                tool_call_chunks=chunks,
                response_metadata=msg.response_metadata,
                usage_metadata=msg.usage_metadata,
                chunk_position="last",
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call, stops, name = self._call(messages, stop, kwargs)
        stream = self.engine.stream(
            call.prompt, config=call.config, stop=stops, add_special_tokens=False
        )
        target: tuple[CallbackManager, UUID] | None = None
        for record in stream:
            chunk = self._step_chunk(call, record)
            if run_manager:
                _common.emit_step(run_manager, record)
                run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk
            if run_manager is None:
                target = target or self._stream_manager(chunk, CallbackManager)
                if target is not None:
                    payload = _common.step_payload(record)
                    target[0].on_custom_event(_common.STEP_EVENT, payload, run_id=target[1])
        assert stream.result is not None
        yield self._final_chunk(call, stream.result, name)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call, stops, name = self._call(messages, stop, kwargs)
        stream = self.engine.stream(
            call.prompt, config=call.config, stop=stops, add_special_tokens=False
        )
        target: tuple[AsyncCallbackManager, UUID] | None = None
        async for record in _common.stream_in_thread(stream):
            chunk = self._step_chunk(call, record)
            if run_manager:
                await _common.aemit_step(run_manager, record)
                await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk
            if run_manager is None:
                target = target or self._stream_manager(chunk, AsyncCallbackManager)
                if target is not None:
                    payload = _common.step_payload(record)
                    await target[0].on_custom_event(_common.STEP_EVENT, payload, run_id=target[1])
        assert stream.result is not None
        yield self._final_chunk(call, stream.result, name)


def _reset(token: Any) -> None:
    # a generator finalised in another context has nothing to restore there
    with contextlib.suppress(ValueError):
        _STREAM_CONFIG.reset(token)


def _json(args: dict[str, Any]) -> str:
    import json

    return json.dumps(args)

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
from pydantic import BaseModel, ConfigDict, Field

from .._adapter import SpecGuardParams
from .._records import Records, arun_call, run_call
from ..chat import ChatCall, ReplyStream, reasoning_split
from ..errors import InvalidInputError
from ..tools.binding import check_tools
from . import _common

if TYPE_CHECKING:
    from ..types import GenerationResult


# `stream`/`astream` in langchain-core 1.x call `_stream` without a run manager; the caller's
# config travels here so step events still reach its handlers (and `astream_events`).
_STREAM_CONFIG: ContextVar[RunnableConfig | None] = ContextVar("specguard_stream", default=None)
_RUN_PREFIX = "lc_run--"
_M = TypeVar("_M", CallbackManager, AsyncCallbackManager)


# json_mode without a schema: a forced call whose arguments are any JSON object
_JSON_OBJECT: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "json_object",
        "description": "The reply as JSON.",
        "parameters": {"type": "object"},
    },
}


def _with_call(message: AIMessage) -> AIMessage:
    """The reply, if it holds a valid call of the structured-output tool; else
    ``OutputParserException`` naming why (the parsers would return None)."""
    from langchain_core.exceptions import OutputParserException

    if message.tool_calls:
        return message
    bad = message.invalid_tool_calls
    why = bad[0].get("error") if bad else "the reply made no call"
    raise OutputParserException(
        f"no structured output: {why}", llm_output=str(message.content or (bad and bad[0]))
    )


def _run_id_of(chunk: ChatGenerationChunk) -> UUID | None:
    """The chat run's id, which langchain-core writes into the first chunk's message id."""
    mid = chunk.message.id or ""
    try:
        return UUID(mid[len(_RUN_PREFIX) :]) if mid.startswith(_RUN_PREFIX) else None
    except ValueError:
        return None


class ChatSpecGuard(SpecGuardParams, BaseChatModel):
    """SpecGuard step-level speculative decoding as a LangChain chat model.

    Construction is cheap and validates every parameter (names from langchain-huggingface and
    ChatOllama such as ``model``, ``max_new_tokens``, ``num_predict``, ``model_kwargs`` are
    mapped; any other unknown name raises). The draft and target load on first use and are
    shared with every other object pointing at the same weights. Without `draft`/`target` the
    bundled offline pair is used. ``engine=`` adopts an already built `SpecGuard`.

    Example:
        .. code-block:: python

            from specguard_integrations.langchain import ChatSpecGuard

            llm = ChatSpecGuard(draft="Qwen/Qwen2.5-1.5B-Instruct",
                                model="Qwen/Qwen2.5-7B-Instruct", temperature=0.7)
            msg = llm.invoke("Solve 2x + 3 = 11.")
            msg.response_metadata["specguard_steps"]   # one record per step
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    streaming: bool = Field(False, description="invoke() streams internally (LangChain's flag).")

    # ------------------------------------------------------------ identity
    @property
    def _llm_type(self) -> str:
        return "specguard-chat"

    def _model_name(self) -> str:
        """The target that runs (loaded lazily: before that, the name it will load)."""
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
        # a per-call `model` that is not the target fails the call (`_call`), so a run that
        # completes always names the model that ran
        params = LangSmithParams(
            ls_provider=_common.PROVIDER,
            ls_model_name=kwargs.get("model") or self._model_name(),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        # the stops the call runs with (`call_stop`): a bad value fails here as the call would
        if ls_stop := self.call_stop(stop if stop is not None else kwargs.get("stop")):
            params["ls_stop"] = list(ls_stop)
        return params

    # ------------------------------------------------------------ tools
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools, rendered through the chat template; `tool_choice` ("auto", "any",
        "required", a tool name) forces a call by starting the reply with the call's text.
        `parallel_tool_calls` (None or True: several calls in one reply may be made, as
        OpenAI's default; False: one at most); a call to a named tool is always one call.
        A tool whose parameters are not a JSON-schema object is refused here."""
        formatted = check_tools([convert_to_openai_tool(t) for t in tools])
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Structured output through a forced call of a tool whose parameters are `schema`,
        sampled under a grammar of that schema (the ``[grammar]`` extra), so the output is
        valid by construction.

        All three methods decode the same way, as `specguard serve` serves ``response_format``:
        `function_calling` and `json_schema` take the schema; `json_mode` without one returns
        any JSON object (a dict). `strict=True` is OpenAI's strict schema: no properties beyond
        the schema's (``additionalProperties: false`` throughout). A reply that does not parse
        (no grammar, or cut by the token budget): without `include_raw` the parser raises
        (``OutputParserException``); with it the result is
        ``{"raw": message, "parsed": None, "parsing_error": error}``.
        """
        from langchain_core.output_parsers.openai_tools import (
            JsonOutputKeyToolsParser,
            PydanticToolsParser,
        )
        from langchain_core.runnables import RunnableLambda, RunnableMap, RunnablePassthrough
        from langchain_core.utils.pydantic import is_basemodel_subclass

        if kwargs:
            raise InvalidInputError(f"unsupported arguments: {sorted(kwargs)}")
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise InvalidInputError(f"method: unknown value {method!r}")
        if schema is None and method != "json_mode":
            raise InvalidInputError(f"with_structured_output(method={method!r}) needs a schema")
        tool: dict[str, Any] = (
            _JSON_OBJECT if schema is None else convert_to_openai_tool(schema, strict=strict)
        )
        name = str(tool["function"]["name"])
        llm = self.bind_tools(
            [tool],
            tool_choice=name,
            ls_structured_output_format={
                "kwargs": {"method": method, "strict": strict},
                "schema": tool if schema is None else schema,
            },
        )
        parser: Runnable[Any, Any] = RunnableLambda(_with_call) | (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if isinstance(schema, type) and is_basemodel_subclass(schema)  # pydantic v1 or v2
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=lambda x: parser.invoke(x["raw"]), parsing_error=lambda _: None
        )
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )

    # ------------------------------------------------------------ calls
    def _start(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[ChatCall, Records]:
        """The rendered call and its records (the adapters' one call path)."""
        override = kwargs.pop("model", None)
        if override is not None and override != self._model_name():
            raise InvalidInputError(
                f"model={override!r}: this ChatSpecGuard runs {self._model_name()!r}; "
                "construct another ChatSpecGuard for another draft/target pair"
            )
        kwargs.pop("ls_structured_output_format", None)
        return self.start_chat(_common.to_chat_dicts(messages), kwargs, stop=stop)

    def _message(self, call: ChatCall, result: GenerationResult) -> AIMessage:
        parsed = call.parse(result.text, result.budget_cut)
        extra: dict[str, Any] = {}
        content = parsed.content
        if self.reasoning:
            reasoning, content = reasoning_split(call, result.text, result.step_texts)
            if reasoning:
                extra["reasoning_content"] = reasoning
        return AIMessage(
            content=content,
            tool_calls=parsed.tool_calls,
            invalid_tool_calls=parsed.invalid_tool_calls,
            additional_kwargs=extra,
            response_metadata=_common.response_metadata(result, self, bool(parsed.tool_calls)),
            usage_metadata=_common.usage_metadata(result),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, records = self._start(messages, stop, kwargs)
        result = run_call(records, lambda r: _common.emit_step(run_manager, r))
        return ChatResult(generations=[ChatGeneration(message=self._message(call, result))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, records = self._start(messages, stop, kwargs)
        result = await arun_call(records, lambda r: _common.aemit_step(run_manager, r))
        return ChatResult(generations=[ChatGeneration(message=self._message(call, result))])

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

    def _final_chunk(self, call: ChatCall, result: GenerationResult) -> ChatGenerationChunk:
        msg = self._message(call, result)
        chunks = [
            {"name": tc["name"], "args": _json(tc["args"]), "id": tc["id"], "index": i}
            for i, tc in enumerate(msg.tool_calls)
        ]
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=chunks,
                invalid_tool_calls=msg.invalid_tool_calls,
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
        call, stream = self._start(messages, stop, kwargs)
        text = ReplyStream(call, self.reasoning)
        target: tuple[CallbackManager, UUID] | None = None
        for record in stream:
            chunk = _common.chunk(*text.step(record.text, record.finish))
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
        yield _common.chunk(*text.finish(stream.result.text, stream.result.step_texts))
        yield self._final_chunk(call, stream.result)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call, stream = self._start(messages, stop, kwargs)
        text = ReplyStream(call, self.reasoning)
        target: tuple[AsyncCallbackManager, UUID] | None = None
        async for record in stream:
            chunk = _common.chunk(*text.step(record.text, record.finish))
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
        yield _common.chunk(*text.finish(stream.result.text, stream.result.step_texts))
        yield self._final_chunk(call, stream.result)


def _reset(token: Any) -> None:
    # a generator finalised in another context has nothing to restore there
    with contextlib.suppress(ValueError):
        _STREAM_CONFIG.reset(token)


def _json(args: dict[str, Any]) -> str:
    import json

    return json.dumps(args)

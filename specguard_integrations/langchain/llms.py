"""`SpecGuardLLM`: SpecGuard as a LangChain text-completion LLM (prompt string in, text out)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, Field, PrivateAttr

from .._adapter import EngineOwner, llm_params
from ..config import SpecGuardConfig
from . import _common

if TYPE_CHECKING:
    from ..engine.loop import SpecGuard
    from ..types import GenerationResult


class SpecGuardLLM(EngineOwner, BaseLLM):
    """SpecGuard on raw text prompts; each step streams as one chunk.

    `generation_info` carries the finish reason, the SpecGuard summary and the step records.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    draft: str | None = Field(None, description="Draft model id or path (None: bundled pair).")
    target: str | None = Field(None, description="Target model id or path (None: bundled pair).")
    model_name: str | None = Field(None, alias="model")
    config: SpecGuardConfig = Field(default_factory=SpecGuardConfig)
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    device: str = "auto"
    dtype: str = "auto"

    _engine: SpecGuard | None = PrivateAttr(None)

    @property
    def _llm_type(self) -> str:
        return "specguard"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"draft": self.draft, "target": self.target, "config": self.config.model_dump()}

    def _config(self, kwargs: dict[str, Any]) -> SpecGuardConfig:
        cfg = llm_params(
            self.config,
            temperature=kwargs.pop("temperature", self.temperature),
            max_tokens=kwargs.pop("max_tokens", self.max_tokens),
            seed=kwargs.pop("seed", self.seed),
        )
        if kwargs:
            raise ValueError(f"unsupported call arguments: {sorted(kwargs)}")
        return cfg

    def _info(self, result: GenerationResult) -> dict[str, Any]:
        name = self.model_name or self.engine.target.name
        meta = _common.response_metadata(result, name, has_tool_calls=False)
        return meta | {"usage": _common.usage_metadata(result)}

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        cfg = self._config(kwargs)
        generations = []
        for prompt in prompts:
            stream = self.engine.stream(prompt, config=cfg, stop=stop or self.stop)
            for record in stream:
                _common.emit_step(run_manager, record)
            assert stream.result is not None
            generations.append(
                [Generation(text=stream.result.text, generation_info=self._info(stream.result))]
            )
        return LLMResult(
            generations=generations, llm_output={"model_name": self.engine.target.name}
        )

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        cfg = self._config(kwargs)
        generations = []
        for prompt in prompts:
            stream = self.engine.stream(prompt, config=cfg, stop=stop or self.stop)
            async for record in _common.stream_in_thread(stream):
                await _common.aemit_step(run_manager, record)
            assert stream.result is not None
            generations.append(
                [Generation(text=stream.result.text, generation_info=self._info(stream.result))]
            )
        return LLMResult(
            generations=generations, llm_output={"model_name": self.engine.target.name}
        )

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        stream = self.engine.stream(prompt, config=self._config(kwargs), stop=stop or self.stop)
        for record in stream:
            _common.emit_step(run_manager, record)
            chunk = GenerationChunk(text=record.text)
            if run_manager:
                run_manager.on_llm_new_token(record.text, chunk=chunk)
            yield chunk
        assert stream.result is not None
        yield GenerationChunk(text="", generation_info=self._info(stream.result))

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        stream = self.engine.stream(prompt, config=self._config(kwargs), stop=stop or self.stop)
        async for record in _common.stream_in_thread(stream):
            chunk = GenerationChunk(text=record.text)
            if run_manager:
                await run_manager.on_llm_new_token(record.text, chunk=chunk)
            yield chunk
        assert stream.result is not None
        yield GenerationChunk(text="", generation_info=self._info(stream.result))

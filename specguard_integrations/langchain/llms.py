"""`SpecGuardLLM`: SpecGuard as a LangChain text-completion LLM (prompt string in, text out).

Completion text is the continuation as written (whitespace kept, so chunks join to exactly the
`invoke` text); only special tokens are removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseLLM, LanguageModelInput
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict

from .._adapter import SpecGuardParams
from .._records import Records, arun_call, run_call
from ..chat import strip_special
from . import _common

if TYPE_CHECKING:
    from ..types import GenerationResult


class SpecGuardLLM(SpecGuardParams, BaseLLM):
    """SpecGuard on raw text prompts; each step streams as one chunk.

    Same parameters as `ChatSpecGuard`. `generation_info` carries the finish reason, the
    SpecGuard summary (with both models' names), the step records and the usage.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "specguard"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"draft": self.draft, "target": self.target, "config": self.config.model_dump()}

    def _text(self, text: str) -> str:
        return strip_special(text, self._special())

    def _special(self) -> tuple[str, ...]:
        return self.engine.special_texts

    def _info(self, result: GenerationResult) -> dict[str, Any]:
        meta = _common.response_metadata(result, self, has_tool_calls=False)
        return meta | {"usage": _common.usage_metadata(result)}

    def _start(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> Records:
        """The records of one prompt's run (the adapters' one call path)."""
        return self.start_call(prompt, kwargs, stop=stop)

    def _generation(self, result: GenerationResult) -> list[Generation]:
        return [Generation(text=self._text(result.text), generation_info=self._info(result))]

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """As LangChain's; with `return_exceptions`, a prompt that fails fails alone (an LLM's
        batch runs as one `generate`, whose first error would fill every place)."""
        if not return_exceptions:
            return super().batch(inputs, config, **kwargs)
        return Runnable.batch(self, inputs, config, return_exceptions=True, **kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """As `batch`, async."""
        if not return_exceptions:
            return await super().abatch(inputs, config, **kwargs)
        return await Runnable.abatch(self, inputs, config, return_exceptions=True, **kwargs)

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        def one(prompt: str) -> list[Generation]:
            records = self._start(prompt, stop, dict(kwargs))
            result = run_call(records, lambda r: _common.emit_step(run_manager, r))
            return self._generation(result)

        # several prompts run at once: the step scheduler groups their model calls
        generations = (
            [one(p) for p in prompts] if len(prompts) == 1 else _concurrently(one, prompts)
        )
        return LLMResult(generations=generations, llm_output={"model_name": self.model_names()[1]})

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        async def one(prompt: str) -> list[Generation]:
            records = self._start(prompt, stop, dict(kwargs))
            emit = lambda r: _common.aemit_step(run_manager, r)  # noqa: E731
            return self._generation(await arun_call(records, emit))

        generations = list(await asyncio.gather(*(one(p) for p in prompts)))
        return LLMResult(generations=generations, llm_output={"model_name": self.model_names()[1]})

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        stream = self._start(prompt, stop, kwargs)
        for record in stream:
            _common.emit_step(run_manager, record)
            chunk = GenerationChunk(text=self._text(record.text))
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
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
        stream = self._start(prompt, stop, kwargs)
        async for record in stream:
            await _common.aemit_step(run_manager, record)
            chunk = GenerationChunk(text=self._text(record.text))
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
        assert stream.result is not None
        yield GenerationChunk(text="", generation_info=self._info(stream.result))


LangChainSpecGuardLLM = SpecGuardLLM  # an unambiguous name beside LlamaIndex code


def _concurrently(fn: Callable[[str], list[Generation]], prompts: list[str]) -> list[Any]:
    """`fn` over `prompts` in threads, results in order (the first error is raised)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(len(prompts), 32), thread_name_prefix="specguard-lc") as pool:
        return list(pool.map(fn, prompts))

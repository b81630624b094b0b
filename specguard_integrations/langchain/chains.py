"""`SpecGuardReasoningChain`: a Runnable that answers a question step by step.

Output: ``{"answer", "text", "steps", "summary"}``. `stream` yields one ``{"steps": [record]}``
chunk per decided step and a last chunk with the answer; chunks add up to the `invoke` output.
Each step is a child run named ``specguard_step_<i>`` (inputs: its index; outputs: the record),
so tracers show the step tree, and a ``specguard_step`` custom event is dispatched per step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.utils import AddableDict
from pydantic import ConfigDict, Field

from .._adapter import SpecGuardParams
from .._records import Records
from ..errors import InvalidInputError
from ..segmentation import extract_answer
from . import _common

if TYPE_CHECKING:
    from ..types import GenerationResult, StepRecord

ChainInput = str | dict[str, Any]


class SpecGuardReasoningChain(SpecGuardParams, RunnableSerializable[ChainInput, dict[str, Any]]):
    """Question in (a string, or a dict with `input_key`), answer and scored steps out.

    Same model parameters as `ChatSpecGuard`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    prompt_template: str = Field(
        "Question: {question}\n", description="Prompt built from the question."
    )
    input_key: str = "question"

    def _records(self, value: ChainInput, kwargs: dict[str, Any]) -> Records:
        """The records of one question's run (the adapters' one call path: the chain's
        `timeout` and `max_retries` hold, and per-call arguments are read, as on every
        adapter)."""
        return self.start_call(self._prompt(value), dict(kwargs))

    def _prompt(self, value: ChainInput) -> str:
        if isinstance(value, str):
            question = value
        elif isinstance(value, dict) and self.input_key in value:
            question = str(value[self.input_key])
        else:
            raise InvalidInputError(f"input must be a string or a dict with key {self.input_key!r}")
        if not question.strip():
            raise InvalidInputError("question is empty")
        return self.prompt_template.format(question=question)

    def _final(self, result: GenerationResult) -> AddableDict:
        markers = self.config.final_answer_markers
        return AddableDict(
            answer=extract_answer(result.text, markers) or result.text.strip(),
            text=result.text,
            summary=result.summary(),
        )

    # ------------------------------------------------------------------ sync
    def invoke(
        self, input: ChainInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        final: AddableDict | None = None
        for chunk in self.stream(input, config, **kwargs):
            final = chunk if final is None else final + chunk
        assert final is not None
        return dict(final)

    def stream(
        self, input: ChainInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AddableDict]:
        yield from self._transform_stream_with_config(  # type: ignore[misc]
            iter([input]), self._transform, config, **kwargs
        )

    def _transform(
        self,
        inputs: Iterator[ChainInput],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[AddableDict]:
        stream = self._records(next(iter(inputs)), kwargs)
        children = run_manager.get_child()
        for record in stream:
            payload = _common.step_payload(record)
            step_run = children.on_chain_start(
                None, {"step_index": record.step_index}, name=_step_name(record)
            )
            step_run.on_chain_end(payload)
            children.on_custom_event(_common.STEP_EVENT, payload, run_id=run_manager.run_id)
            yield AddableDict(steps=[payload])
        assert stream.result is not None
        yield self._final(stream.result)

    # ------------------------------------------------------------------ async
    async def ainvoke(
        self, input: ChainInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        final: AddableDict | None = None
        async for chunk in self.astream(input, config, **kwargs):
            final = chunk if final is None else final + chunk
        assert final is not None
        return dict(final)

    async def astream(
        self, input: ChainInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AddableDict]:
        async def one() -> AsyncIterator[ChainInput]:
            yield input

        async for chunk in self._atransform_stream_with_config(
            one(), self._atransform, config, **kwargs
        ):
            yield chunk  # type: ignore[misc]

    async def _atransform(
        self,
        inputs: AsyncIterator[ChainInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[AddableDict]:
        first = None
        async for value in inputs:
            first = value
            break
        stream = self._records(first if first is not None else "", kwargs)
        children = run_manager.get_child()
        async for record in stream:
            payload = _common.step_payload(record)
            step_run = await children.on_chain_start(
                None, {"step_index": record.step_index}, name=_step_name(record)
            )
            await step_run.on_chain_end(payload)
            await children.on_custom_event(_common.STEP_EVENT, payload, run_id=run_manager.run_id)
            yield AddableDict(steps=[payload])
        assert stream.result is not None
        yield self._final(stream.result)


def _step_name(record: StepRecord) -> str:
    return f"specguard_step_{record.step_index}"

"""What the server runs for a request: a `ServedModel` takes a `GenRequest` and returns a
`GenOutput`, calling `on_delta` as text becomes final.

- `SpecGuardServed`: one `SpecGuard.stream` run per request, one delta per decided step.
- `PlainServed`: one local model decoding alone, with token logprobs and vLLM's ``stop_reason``
  (how a target is served to `EndpointTarget` when no vLLM is at hand).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..errors import Cancelled

if TYPE_CHECKING:
    from ..backends.local.model import LocalCausalLM
    from ..config import SpecGuardConfig
    from ..constraint import Constraint
    from ..engine.backends import TextModel
    from ..engine.loop import SpecGuardEngine
    from ..types import StepRecord


@dataclass
class GenRequest:
    """A request as the served model takes it."""

    prompt: str
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: tuple[str, ...]
    seed: int | None
    n: int = 1
    logprobs: bool = False
    include_stop: bool = False
    add_special_tokens: bool = True
    segmenter: str | None = None  # "tool_call" when tools are bound
    tool_call_format: str | None = None  # the format its calls are written in
    parallel_tool_calls: bool = False  # several calls in one reply (the request's)
    constraint: Constraint | None = None  # a forced call's grammar


@dataclass
class Choice:
    text: str
    finish_reason: str
    stop_reason: str | None = None
    tokens: list[str] | None = None
    logprobs: list[float] | None = None
    offsets: list[int] | None = None
    completion_tokens: int = 0


@dataclass
class GenOutput:
    choices: list[Choice]
    prompt_tokens: int
    specguard: dict[str, Any] | None = None
    cached_tokens: int = 0  # of the prompt, tokens read from the prefix cache

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


OnDelta = Callable[[str, "StepRecord | None"], None]


class ServedModel:
    """What the server runs: a name, a chat template (`lm`), and `generate`."""

    name: str
    lm: TextModel  # whose tokenizer renders chat prompts
    supports_logprobs: bool = False
    max_n: int = 1
    reasoning: bool = False  # chat replies: steps before the answer as reasoning_content
    tool_call_format: str | None = None  # by vLLM parser name; None: read off the template

    def generate(self, req: GenRequest, on_delta: OnDelta, cancelled: threading.Event) -> GenOutput:
        raise NotImplementedError

    def local_models(self) -> list[TextModel]:
        return [self.lm]

    def default_workers(self) -> int:
        """Generations to run at once when the operator names none: 1 where every model is
        local and on the CPU (concurrent generations only split its cores, and grouped
        forwards save little there: docs/scale-out.md), 16 where a GPU or a remote model
        lets them overlap."""
        lms = self.local_models()
        remote = len(lms) < self.model_count
        return 1 if not remote and all(lm.device.type == "cpu" for lm in lms) else 16

    model_count = 1  # models a generation uses, local or remote

    def check_prompt(self, prompt: str, add_special_tokens: bool) -> None:
        """Raise `ValueError` naming the problem when the prompt cannot be generated from."""
        from ..backends.local.sessions import check_prompt

        for lm in self.local_models():
            ids = lm.encode_prompt(prompt, add_special_tokens=add_special_tokens)
            check_prompt(lm, ids, prompt)


class SpecGuardServed(ServedModel):
    """Each request is one `SpecGuard.stream` run; one delta per decided step."""

    def __init__(
        self,
        engine: SpecGuardEngine,
        config: SpecGuardConfig,
        name: str = "specguard",
        *,
        reasoning: bool = False,
        tool_call_format: str | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.name = name
        self.reasoning = reasoning
        self.tool_call_format = tool_call_format
        self.lm = engine.chat_model()

    model_count = 2

    def local_models(self) -> list[TextModel]:
        return self.engine.local_models()

    def generate(self, req: GenRequest, on_delta: OnDelta, cancelled: threading.Event) -> GenOutput:
        from .._adapter import config_for_call

        cfg = config_for_call(
            self.config, temperature=req.temperature, max_tokens=req.max_tokens, seed=req.seed
        ).merged(
            top_p=req.top_p,
            segmenter=req.segmenter,
            tool_call_format=req.tool_call_format,
            parallel_tool_calls=req.parallel_tool_calls if req.segmenter else None,
        )
        from ..cancellation import scope

        stream = self.engine.stream(
            req.prompt,
            config=cfg,
            stop=req.stop,
            add_special_tokens=req.add_special_tokens,
            constraint=req.constraint,
        )
        # the client leaving abandons a request in flight to a remote model, too
        with scope(cancelled):
            try:
                for record in stream:
                    if cancelled.is_set():
                        raise Cancelled("generation cancelled")
                    on_delta(record.text, record)
            finally:
                stream.close()
        result = stream.result
        assert result is not None
        choice = Choice(
            text=result.text,
            finish_reason=result.openai_finish_reason(),
            completion_tokens=result.output_tokens,
        )
        extension = {"summary": result.summary(), "steps": result.steps_json()}
        return GenOutput([choice], result.prompt_tokens, extension, result.cached_tokens)


class PlainServed(ServedModel):
    """One local model decoding alone (token deltas, logprobs, stop_reason)."""

    supports_logprobs = True
    max_n = 16

    def __init__(self, lm: LocalCausalLM, name: str | None = None) -> None:
        self.lm = self.model = lm
        self.name = name or lm.name

    def generate(self, req: GenRequest, on_delta: OnDelta, cancelled: threading.Event) -> GenOutput:
        import torch

        gen = None
        if req.seed is not None:
            gen = torch.Generator(device=self.model.device).manual_seed(req.seed)
        choices, prompt_tokens = [], 0
        for _ in range(req.n):
            choice, prompt_tokens = self._one(req, gen, on_delta if req.n == 1 else None, cancelled)
            choices.append(choice)
        return GenOutput(choices, prompt_tokens)

    def _one(
        self,
        req: GenRequest,
        gen: Any,
        on_delta: OnDelta | None,
        cancelled: threading.Event,
    ) -> tuple[Choice, int]:
        from ..baselines.plain import plain_stream

        stream = plain_stream(
            self.model,
            req.prompt,
            max_tokens=req.max_tokens or 256,
            temperature=req.temperature if req.temperature is not None else 1.0,
            top_p=req.top_p or 1.0,
            stop=req.stop,
            include_stop=req.include_stop,
            generator=gen,
            add_special_tokens=req.add_special_tokens,
            cancelled=cancelled.is_set,
            constraint=req.constraint,
        )
        while True:
            try:
                delta = next(stream)
            except StopIteration as done:
                r = done.value
                break
            if on_delta is not None:
                on_delta(delta, None)
        # the plain result has every field of a choice, under the same names
        choice = Choice(**{f.name: getattr(r, f.name) for f in fields(Choice)})
        return choice, r.prompt_tokens

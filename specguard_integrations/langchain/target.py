"""`LangChainTarget`: any LangChain language model as SpecGuard's target, one step per call.

The engine knows it only as a `TargetModel`; this module is where LangChain meets it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..backends.remote.replies import Completion, step_stops
from ..backends.remote.sessions import TextTargetSession
from ..engine.backends import check_prompt_text
from ..errors import EndpointError, InvalidTypeError

if TYPE_CHECKING:
    from ..engine.backends import DecodeSettings, Rng


class LangChainTarget:
    """Any LangChain language model as the target, one step per call.

    A `BaseLLM` continues ``prompt + steps so far`` directly. A chat model gets the prompt as a
    human message and the steps so far as a trailing AI message to continue (providers that
    accept an assistant prefill, e.g. Anthropic or vLLM's ``continue_final_message``). The step
    boundary goes in as ``stop``; the answer is cut again by the segmenter.
    """

    local_model = None  # the model runs wherever LangChain reaches it

    def __init__(self, model: Any, *, name: str | None = None) -> None:
        from langchain_core.language_models import BaseChatModel, BaseLLM

        if not isinstance(model, (BaseChatModel, BaseLLM)):
            raise InvalidTypeError(
                f"LangChainTarget needs a LangChain chat model or LLM, got {type(model).__name__}"
            )
        self.model = model
        self.name = name or str(
            getattr(model, "model_name", None) or getattr(model, "model", None) or model._llm_type
        )

    def verify_refusal(self) -> str:
        return (
            f"{self.name} is reached through LangChain, which returns no prompt"
            " log-probabilities; use judge='draft', or an EndpointTarget on vLLM, SGLang or"
            " llama-cpp-python"
        )

    def start(
        self,
        prompt: str,
        *,
        add_special_tokens: bool = True,
        prefix_cache: int = 0,
        deadline: float | None = None,  # each step's call is bounded by it (`DecodeSettings`)
    ) -> LangChainTargetSession:
        return LangChainTargetSession(self, check_prompt_text(prompt))


class LangChainTargetSession(TextTargetSession):
    def __init__(self, backend: LangChainTarget, prompt: str) -> None:
        super().__init__(prompt)
        self.backend = backend
        self.where = backend.name

    def complete(self, settings: DecodeSettings, generator: Rng) -> Completion:
        from langchain_core.language_models import BaseLLM
        from langchain_core.messages import AIMessage, HumanMessage

        stop = list(step_stops(settings)) or None
        model = self.backend.model
        tokens = prompt_tokens = 0
        if isinstance(model, BaseLLM):
            text = model.invoke(self.prompt + self.so_far, stop=stop)
        else:
            messages: list[Any] = [HumanMessage(self.prompt)]
            if self.so_far:
                messages.append(AIMessage(self.so_far))
            reply = model.invoke(messages, stop=stop)
            text = reply.text if hasattr(reply, "text") else str(reply.content)
            usage = getattr(reply, "usage_metadata", None) or {}
            tokens, prompt_tokens = (
                int(usage.get("output_tokens", 0)),
                int(usage.get("input_tokens", 0)),
            )
        if not isinstance(text, str):
            raise EndpointError(f"{self.backend.name} returned {type(text).__name__}, not text")
        # a provider never returns the stop string it stopped at: put the boundary back
        text = settings.segmenter.restore(text)
        return Completion(
            text, "stop", False, tokens or max(1, len(text) // 4), prompt_tokens, None, None
        )

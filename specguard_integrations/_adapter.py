"""What every framework adapter shares, framework-free: the parameters (with the names users
bring from langchain-huggingface, ChatOllama and LlamaIndex's HuggingFaceLLM mapped onto ours,
and every other name rejected), the lazily loaded engine, the per-call config, and the one path
every call starts by (`SpecGuardParams.start_call`, `start_chat`).

Adapters stay translation only: they subclass `SpecGuardParams` beside their framework's base.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from ._records import Records
from .config import SpecGuardConfig
from .errors import ConfigError, GenerationTimeout, InvalidInputError, InvalidTypeError

if TYPE_CHECKING:
    from .chat import ChatCall
    from .constraint import Constraint
    from .engine.loop import SpecGuardEngine, StepStream

# names other integrations use for one of our parameters
ANCHORS: dict[str, str] = {
    "model": "target",  # ChatOllama(model=...), ChatOpenAI(model=...)
    "model_name": "target",  # HuggingFaceLLM(model_name=...)
    "model_id": "target",  # HuggingFacePipeline.from_model_id(model_id=...)
    "max_new_tokens": "max_tokens",  # transformers, HuggingFaceLLM
    "num_predict": "max_tokens",  # ChatOllama
    "max_completion_tokens": "max_tokens",  # OpenAI
    "num_output": "max_tokens",  # LlamaIndex's LLMMetadata
    "stop_sequences": "stop",  # LangChain's standard alias
}
# names other integrations use whose meaning we have no knob for: rejected with the reason
UNSUPPORTED: dict[str, str] = {
    "top_k": "SpecGuard samples draft candidates with top_p (nucleus sampling) only",
    "repetition_penalty": "SpecGuard applies no repetition penalty",
    "repeat_penalty": "SpecGuard applies no repetition penalty",
    "presence_penalty": "SpecGuard applies no presence penalty",
    "frequency_penalty": "SpecGuard applies no frequency penalty",
    "num_ctx": "the context window is the models' own",
    "n": "one reply per call (k candidates per step is config.k)",
    "tokenizer_name": "the tokenizer is loaded from the model's own directory",
}
# per-call keyword arguments the frameworks pass for their own bookkeeping
FRAMEWORK_CALL_KEYS = frozenset({"ls_structured_output_format", "formatted"})
GENERATE_KEYS = {
    "max_new_tokens": "max_tokens",
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
}


def _from_generate_kwargs(where: str, gk: Any) -> dict[str, Any]:
    """transformers generate options (``generate_kwargs``/``pipeline_kwargs``) as ours."""
    if not isinstance(gk, dict):
        raise InvalidInputError(f"{where} must be a dict, got {type(gk).__name__}")
    out: dict[str, Any] = {}
    for key, value in gk.items():
        if key == "do_sample":
            if not value:
                out["temperature"] = 0.0
        elif key in GENERATE_KEYS:
            out[GENERATE_KEYS[key]] = value
        else:
            reason = UNSUPPORTED.get(key, "it has no SpecGuard equivalent")
            raise InvalidInputError(f"{where}[{key!r}] is not supported: {reason}")
    return out


def _merge_loading(data: dict[str, Any], key: str, value: Any) -> None:
    """``model_kwargs`` / ``tokenizer_kwargs`` / ``device_map`` apply to both models; the
    role's own ``draft_kwargs`` / ``target_kwargs`` win."""
    if key != "device_map" and not isinstance(value, dict):
        raise InvalidInputError(f"{key} must be a dict, got {type(value).__name__}")
    add = {"device_map": value} if key == "device_map" else value
    if key == "tokenizer_kwargs":
        add = {"tokenizer_kwargs": value}
    for role in ("draft_kwargs", "target_kwargs"):
        data[role] = {**add, **(data.get(role) or {})}


def map_params(cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments with other integrations' names mapped onto ours; any other
    unknown name raises `ValueError` naming it."""
    known = set(cls.model_fields) | {
        f.alias for f in cls.model_fields.values() if f.alias is not None
    }
    out: dict[str, Any] = {k: v for k, v in data.items() if k in known}
    for key, value in data.items():
        if key in known:
            continue
        if key in ANCHORS:
            ours = ANCHORS[key]
            if ours in data and data[ours] != value:
                raise InvalidInputError(
                    f"{key}={value!r} and {ours}={data[ours]!r} disagree: give one"
                )
            out[ours] = value
        elif key in ("model_kwargs", "tokenizer_kwargs", "device_map"):
            _merge_loading(out, key, value)
        elif key in ("generate_kwargs", "pipeline_kwargs"):
            out.update(_from_generate_kwargs(key, value))
        elif key == "do_sample":
            if not value:
                out["temperature"] = 0.0
        elif key in UNSUPPORTED:
            raise InvalidInputError(f"{cls.__name__}: {key} is not supported: {UNSUPPORTED[key]}")
        else:
            raise InvalidInputError(
                f"{cls.__name__} got an unknown parameter {key!r}; see the parameters table in"
                " the docs (names from other integrations are mapped where they mean the same)"
            )
    return out


class SpecGuardParams(BaseModel):
    """The parameters every adapter shares; framework classes subclass this beside their base.

    Construction is cheap and validates everything: the models load on first use, shared with
    every other object pointing at the same weights. Without `draft`/`target` the bundled
    offline pair runs, with its own calibrated config.
    """

    draft: str | None = Field(None, description="Draft model id or path (None: bundled pair).")
    target: str | None = Field(
        None, description="Target model id or path (None: bundled pair). Also `model`."
    )
    draft_kwargs: dict[str, Any] | None = Field(
        None, description="from_pretrained options of the draft (gguf_file, revision, ...)."
    )
    target_kwargs: dict[str, Any] | None = Field(
        None, description="from_pretrained options of the target (device_map, ...)."
    )
    draft_model: Any = Field(None, description="An already loaded transformers draft model.")
    draft_tokenizer: Any = Field(None, description="Its tokenizer (with draft_model).")
    target_model: Any = Field(None, description="An already loaded transformers target model.")
    target_tokenizer: Any = Field(None, description="Its tokenizer (with target_model).")
    tool_call_format: str | None = Field(
        None, description="Tool-call format by vLLM parser name (default: read off the template)."
    )
    config: SpecGuardConfig = Field(default_factory=SpecGuardConfig)
    temperature: StrictFloat | StrictInt | None = Field(
        None, ge=0.0, le=10.0, description="Draft temperature; 0 runs greedy (k = 1)."
    )
    top_p: StrictFloat | StrictInt | None = Field(
        None, gt=0.0, le=1.0, description="Nucleus mass when sampling."
    )
    max_tokens: StrictInt | None = Field(None, ge=1, description="Generated tokens at most.")
    seed: StrictInt | None = Field(
        None, ge=0, le=2**64 - 1, description="Sampling seed, 0 to 2**64 - 1."
    )
    stop: list[str] | None = Field(None, description="Stop sequences (a string is one).")
    reasoning: bool = Field(
        False, description="Steps before the answer go to reasoning content, the answer to text."
    )
    timeout: StrictFloat | StrictInt | None = Field(
        None,
        gt=0,
        description="Seconds a call may run, retries included; it stops between steps"
        " (GenerationTimeout, a TimeoutError).",
    )
    max_retries: StrictInt = Field(
        0, ge=0, description="Retries of a call whose target server could not be reached."
    )
    device: str = Field("auto", description="Device of both models (ignored with device_map).")
    dtype: str = Field("auto", description="torch dtype name, or auto.")

    _engine: SpecGuardEngine | None = PrivateAttr(None)

    def __init__(self, *, engine: SpecGuardEngine | None = None, **kwargs: Any) -> None:
        """`engine` adopts an already built `SpecGuard` (and its config unless one is given)."""
        from pydantic import ValidationError

        if engine is not None:
            kwargs.setdefault("config", engine.config)
        try:
            super().__init__(**kwargs)
        except ValidationError as err:
            raise ConfigError.from_validation(err, type(self).__name__) from None
        self._engine = engine

    @model_validator(mode="before")
    @classmethod
    def _map_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = map_params(cls, data)
        if out.get("config") is None:
            # the bundled pair comes with its own settings (greedy, bounds fitted to it)
            from .registry import default_config

            loaded = out.get("draft_model") is not None or out.get("target_model") is not None
            names = ("", "") if loaded else (out.get("draft"), out.get("target"))
            out["config"] = default_config(*names)
        return out

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, value: Any) -> list[str] | None:
        from .engine.arguments import normalise_stop

        try:
            return None if value is None else list(normalise_stop(value))
        except TypeError as err:  # a validation error like any other bad value
            raise InvalidInputError(str(err)) from None

    @model_validator(mode="after")
    def _validate_now(self) -> SpecGuardParams:
        for role in ("draft", "target"):
            model, tok = getattr(self, f"{role}_model"), getattr(self, f"{role}_tokenizer")
            if (model is None) != (tok is None):
                raise InvalidInputError(f"{role}_model and {role}_tokenizer are given together")
            if model is not None and getattr(self, role) is not None:
                raise InvalidInputError(f"give {role} (a name) or {role}_model (loaded), not both")
        named = [self.draft is not None or self.draft_model is not None]
        named.append(self.target is not None or self.target_model is not None)
        if named[0] != named[1]:
            raise InvalidInputError(
                "give both draft and target models, or neither (the bundled pair)"
            )
        if self.tool_call_format is not None:
            from .tools import format_by_name

            format_by_name(self.tool_call_format)  # raises for an unknown name
        self.call_config({})  # temperature/max_tokens/top_p against the config, now
        return self

    @property
    def engine(self) -> SpecGuardEngine:
        if self._engine is None:
            from .registry import load_pair

            d = (self.draft_model, self.draft_tokenizer) if self.draft_model else self.draft
            t = (self.target_model, self.target_tokenizer) if self.target_model else self.target
            self._engine = load_pair(
                d,
                t,
                self.config,
                device=self.device,
                dtype=self.dtype,
                draft_kwargs=self.draft_kwargs,
                target_kwargs=self.target_kwargs,
            )
        return self._engine

    def model_names(self) -> tuple[str, str]:
        """(draft, target) names of the models that run."""
        return self.engine.draft.name, self.engine.target.name

    def call_config(self, kwargs: dict[str, Any]) -> SpecGuardConfig:
        """The config for one call: per-call values (popped from `kwargs`, other integrations'
        names mapped) over the constructor's, over `config`."""
        for name, ours in ANCHORS.items():
            if name in kwargs and ours in ("max_tokens", "stop"):
                kwargs.setdefault(ours, kwargs.pop(name))
        return config_for_call(
            self.config,
            temperature=kwargs.pop("temperature", self.temperature),
            top_p=kwargs.pop("top_p", self.top_p),
            max_tokens=kwargs.pop("max_tokens", self.max_tokens),
            seed=kwargs.pop("seed", self.seed),
        )

    def call_stop(self, stop: Any) -> tuple[str, ...]:
        from .engine.arguments import normalise_stop

        return normalise_stop(stop if stop is not None else self.stop)

    # ------------------------------------------------------------ the one call path
    def start_call(
        self,
        prompt: str,
        kwargs: dict[str, Any],
        *,
        stop: Any = None,
        add_special_tokens: bool = True,
        config: SpecGuardConfig | None = None,
        constraint: Constraint | None = None,
    ) -> Records:
        """Every adapter's call, sync, async and streamed: the per-call arguments in `kwargs`
        are read now (one left over is an error naming it), and the records of one engine run
        come back, run under the object's `timeout` and started again up to `max_retries`
        times while its server cannot be reached (`_records.Records`)."""
        cfg = config or self.call_config(kwargs)
        stops = self.call_stop(kwargs.pop("stop", stop))
        reject_unknown(kwargs, type(self).__name__)
        engine, timeout = self.engine, self.timeout
        ends = None if timeout is None else time.monotonic() + timeout

        def start() -> StepStream:  # each attempt gets what is left of the call's timeout
            left = None if ends is None else ends - time.monotonic()
            if left is not None and left <= 0:
                raise GenerationTimeout(
                    f"the call ran past timeout={timeout}s before its server could be reached"
                )
            return engine.stream(
                prompt,
                config=cfg,
                stop=stops,
                add_special_tokens=add_special_tokens,
                timeout=left,
                constraint=constraint,
            )

        return Records(start, self.max_retries)

    def start_chat(
        self, messages: list[dict[str, Any]], kwargs: dict[str, Any], *, stop: Any = None
    ) -> tuple[ChatCall, Records]:
        """A chat call: ``tools``, ``tool_choice`` and ``parallel_tool_calls`` (on unless
        False, as OpenAI's) taken from `kwargs`, the conversation rendered through the chat
        template (`chat.prepare_chat`), and its records (`start_call`)."""
        from .chat import prepare_chat

        tools = kwargs.pop("tools", None)
        choice = kwargs.pop("tool_choice", None)
        parallel = kwargs.pop("parallel_tool_calls", None)
        if parallel is not None and not isinstance(parallel, bool):
            raise InvalidTypeError(
                f"parallel_tool_calls must be true or false, got {type(parallel).__name__}"
            )
        cfg = self.call_config(kwargs)
        stop = kwargs.pop("stop", stop)
        reject_unknown(kwargs, type(self).__name__)  # before the models load
        call = prepare_chat(
            self.engine.chat_model(),
            messages,
            cfg,
            tools=tools,
            tool_choice=choice,
            tool_call_format_name=self.tool_call_format,
            parallel_tool_calls=parallel is not False,
        )
        records = self.start_call(
            call.prompt,
            kwargs,
            stop=stop,
            add_special_tokens=False,
            config=call.config,
            constraint=call.constraint,
        )
        return call, records


def reject_unknown(kwargs: dict[str, Any], where: str) -> None:
    """Per-call arguments left after the known ones were taken: an error naming them."""
    left = sorted(k for k in kwargs if k not in FRAMEWORK_CALL_KEYS)
    if left:
        raise InvalidInputError(
            f"{where}: unsupported call arguments {left}; per call: temperature, top_p,"
            " max_tokens (max_new_tokens, num_predict), seed, stop"
        )


def config_for_call(
    base: SpecGuardConfig,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> SpecGuardConfig:
    """Map the usual LLM parameters onto the engine config (temperature 0: greedy, k = 1)."""
    overrides: dict[str, Any] = {"max_new_tokens": max_tokens, "seed": seed, "top_p": top_p}
    if temperature is not None:
        overrides["temperature"] = temperature
        if temperature == 0.0:
            overrides["k"] = 1
    return base.merged(**overrides)

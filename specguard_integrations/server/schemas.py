"""The wire format, typed at the door: every request body is validated here before any engine
code runs, and a malformed one is answered 400 with the field it names.

Strict scalars (``"stream": "yes"`` is not true), a discriminated message union per role, tools
whose ``parameters`` are JSON-schema objects, and no unknown fields: a parameter this server does
not implement is rejected by name rather than ignored. OpenAI parameters that have a neutral
value (``presence_penalty: 0``, ``logit_bias: {}``, ``n: 1`` ...) are accepted at that value only.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from ..errors import InvalidInputError

MAX_STOPS = 16
TOOL_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ---------------------------------------------------------------------------- content
class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


def _reject_non_text(v: Any) -> Any:
    if isinstance(v, list):
        for i, part in enumerate(v):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise InvalidInputError(
                    f"content[{i}]: only text content parts are supported, got type {kind!r}"
                )
    return v


Content = StrictStr | list[TextPart]


def content_text(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(p.text for p in content)


# ---------------------------------------------------------------------------- messages
class FunctionCall(_Strict):
    name: Annotated[StrictStr, Field(pattern=TOOL_NAME)]
    arguments: StrictStr | dict[str, Any]

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, v: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(v, str):
            try:
                parsed = json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as err:
                raise InvalidInputError(f"arguments are not JSON: {err}") from None
            if not isinstance(parsed, dict):
                raise InvalidInputError("arguments must be a JSON object")
        return v

    @property
    def args(self) -> dict[str, Any]:
        if isinstance(self.arguments, dict):
            return self.arguments
        return dict(json.loads(self.arguments)) if self.arguments.strip() else {}


class ToolCall(_Strict):
    id: StrictStr = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Strict):
    role: Literal["system", "developer"]
    content: Content
    name: StrictStr | None = None

    _parts = field_validator("content", mode="before")(_reject_non_text)


class UserMessage(_Strict):
    role: Literal["user"]
    content: Content
    name: StrictStr | None = None

    _parts = field_validator("content", mode="before")(_reject_non_text)


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: StrictStr | None = None
    refusal: StrictStr | None = None
    reasoning_content: StrictStr | None = None

    _parts = field_validator("content", mode="before")(_reject_non_text)


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: Content
    tool_call_id: StrictStr = Field(min_length=1)

    _parts = field_validator("content", mode="before")(_reject_non_text)


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


# ---------------------------------------------------------------------------- tools
class FunctionDef(_Strict):
    name: Annotated[StrictStr, Field(pattern=TOOL_NAME)]
    description: StrictStr | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: StrictBool | None = None

    @field_validator("parameters")
    @classmethod
    def _schema_object(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type", "object") != "object":
            raise InvalidInputError(
                f"a tool's parameters must be a JSON schema of type object: {v!r}"
            )
        props = v.get("properties", {})
        if not isinstance(props, dict):
            raise InvalidInputError("parameters.properties must be an object")
        return v


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Strict):
    name: StrictStr


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchema(_Strict):
    name: Annotated[StrictStr, Field(pattern=TOOL_NAME)] = "response"
    description: StrictStr | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: StrictBool | None = None

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise InvalidInputError("response_format of type json_schema needs json_schema")
        return self


class StreamOptions(_Strict):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


# ---------------------------------------------------------------------------- requests
def _neutral(name: str, value: Any, neutral: tuple[Any, ...]) -> None:
    if value not in neutral:
        shown = ", ".join(repr(x) for x in neutral)
        raise InvalidInputError(f"{name} of {value!r} is not supported (only {shown})")


class _Common(_Strict):
    model: StrictStr = Field(min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: StrictFloat | None = Field(None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(None, gt=0.0, le=1.0)
    n: StrictInt = Field(1, ge=1, le=16)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(None, ge=0, le=2**64 - 1)  # what a torch.Generator takes
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    # OpenAI sampling knobs this server does not implement: accepted at their neutral value
    presence_penalty: StrictFloat | None = None
    frequency_penalty: StrictFloat | None = None
    logit_bias: dict[str, Any] | None = None
    include_stop_str_in_output: StrictBool = False  # vLLM extension

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else v or []
        for i, s in enumerate(items):
            if not s:
                raise InvalidInputError(f"stop[{i}] is empty: stop strings must be non-empty")
        if len(items) > MAX_STOPS:
            raise InvalidInputError(f"at most {MAX_STOPS} stop strings")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v: float | None) -> float | None:
        _neutral("a penalty", v, (None, 0, 0.0))
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        _neutral("logit_bias", v, (None, {}))
        return v

    @model_validator(mode="after")
    def _stream_options(self) -> _Common:
        if self.stream_options is not None and not self.stream:
            raise InvalidInputError("stream_options needs stream: true")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(_Common):
    prompt: StrictStr | list[StrictStr]
    logprobs: StrictInt | None = Field(None, ge=0, le=5)
    echo: StrictBool = False
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise InvalidInputError("exactly one prompt per request")
        return v

    @field_validator("echo", "best_of", "suffix")
    @classmethod
    def _unsupported(cls, v: Any) -> Any:
        _neutral("this value", v, (None, False, 1, ""))
        return v

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool = True
    response_format: ResponseFormat | None = None
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = None
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    reasoning_effort: StrictStr | None = None
    continue_final_message: StrictBool = False  # vLLM extension
    add_generation_prompt: StrictBool = True  # vLLM extension

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, v: int | None) -> int | None:
        _neutral("top_logprobs", v, (None, 0))
        return v

    @field_validator("reasoning_effort")
    @classmethod
    def _no_effort(cls, v: str | None) -> str | None:
        _neutral("reasoning_effort", v, (None,))
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.continue_final_message and self.messages[-1].role != "assistant":
            raise InvalidInputError("continue_final_message needs a final assistant message")
        json_format = self.response_format is not None and self.response_format.type != "text"
        if json_format and self.tools:
            raise InvalidInputError("response_format with tools: give one or the other")
        return self

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

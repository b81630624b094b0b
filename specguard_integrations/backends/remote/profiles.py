"""What each OpenAI-compatible engine does differently, one profile per engine, and reading a
choice of any of them into a step.

A step is requested with its boundary as a stop string. The hard part is telling a stop at that
boundary from the model's own end of generation (EOS): both are ``finish_reason: "stop"``, and
most engines drop the stop string from the text. Each profile says how its engine tells them
apart:

| engine     | the stop string | which stop matched | n > 1 | continue an assistant turn |
|------------|-----------------|--------------------|-------|----------------------------|
| `vllm`     | kept on request | `stop_reason`      | yes   | `continue_final_message`   |
| `sglang`   | kept on request | `matched_stop`     | yes   | `continue_final_message`   |
| `tgi`      | always kept     | `finish_reason: "stop_sequence"` | no | automatically         |
| `llamacpp` | dropped         | nothing: asked     | no    | no (rendered here instead) |
| `llama-cpp-python` | dropped | nothing: asked     | no    | no (rendered here instead) |
| `ollama`   | dropped         | nothing: asked     | no    | automatically              |
| `generic`  | dropped?        | nothing: asked     | no    | no (rendered here instead) |

`llamacpp` is llama.cpp's own server (``llama-server``; ``owned_by: "llamacpp"``),
`llama-cpp-python` the Python package's server (``owned_by: "me"``).

Prompt log-probabilities (the target-verified judge) are read with ``echo`` and ``logprobs`` on
``/v1/completions`` from vLLM, SGLang and llama-cpp-python's server (`echo_logprobs`).
llama.cpp's own server (it ignores ``echo``), TGI's OpenAI routes, Ollama and unknown engines
return none: the judge is refused for them.

Constraints (a JSON schema or a regex) go in the engine's own field where the step starts the
constrained text (nothing of it written yet; an engine's field constrains a reply from its
start, and none takes a prefix to continue from). Every step is checked against the constraint
all the same (`TextChecker`): a server's text is never trusted to have honoured a field.

| engine     | `/v1/completions`: JSON schema; regex       | chat API, a new turn            |
|------------|---------------------------------------------|---------------------------------|
| `vllm`     | ``structured_outputs: {json}``; ``{regex}`` | the same                        |
| `sglang`   | ``json_schema`` (text); ``regex``           | the same                        |
| `llamacpp` | ``json_schema`` (see below); none           | (continued over completions)    |
| `tgi`      | none                                        | ``response_format`` json; regex |
| `ollama`   | none                                        | ``response_format`` json_schema |
| others     | none                                        | none                            |

llama.cpp's own server reads ``json_schema``; llama-cpp-python's reads only a GBNF ``grammar``
and ignores it. `specguard serve --mode plain` takes no such field. A field the user already
sends in ``extra_body`` is left as given.
Lark grammars (forced tool calls, ``tool_choice="auto"``) are checked on every engine.

"Asked" means: when the answer ends with ``finish_reason: "stop"``, no stop string in its text
and no field naming one, the model is asked for one more greedy token at that point (the server
reuses its prefix cache). An empty answer means it ended there (EOS); anything else means it
stopped at our boundary, which is put back. With token logprobs (a remote draft) the tokens
tell it directly: a stop match leaves tokens past the text.

`detect` reads the engine off the server once (``/v1/models``, ``/info``, ``/api/version``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ...errors import InvalidInputError, InvalidTypeError

if TYPE_CHECKING:
    from .client import OpenAICompatibleClient

log = logging.getLogger(__name__)

Engine = Literal[
    "auto", "vllm", "sglang", "tgi", "llamacpp", "llama-cpp-python", "ollama", "generic"
]
Prefill = Literal["flags", "auto", "none"]


@dataclass(frozen=True)
class EngineProfile:
    """How one engine speaks the OpenAI API, as far as a step-by-step client cares."""

    name: str
    keep_stop_param: str | None = None  # request field that keeps the stop string in the text
    stop_field: str | None = None  # choice field naming the matched stop string
    stop_sequence_finish: bool = False  # finish_reason "stop_sequence" for a stop string (TGI)
    stop_in_text: bool = False  # the stop string always stays in the text (TGI)
    n: bool = False  # serves n > 1 choices per request
    prefill: Prefill = "none"  # how a chat request continues a trailing assistant message
    echo_logprobs: bool = False  # /v1/completions echoes the prompt with its token logprobs
    extra: dict[str, Any] = field(default_factory=dict)  # sent with every request

    @property
    def asks(self) -> bool:
        """An ambiguous "stop" is resolved by asking for one more token."""
        return not (self.stop_field or self.stop_sequence_finish or self.stop_in_text)


PROFILES: dict[str, EngineProfile] = {
    "vllm": EngineProfile(
        "vllm",
        "include_stop_str_in_output",
        "stop_reason",
        n=True,
        prefill="flags",
        echo_logprobs=True,
    ),
    "sglang": EngineProfile(
        "sglang", "no_stop_trim", "matched_stop", n=True, prefill="flags", echo_logprobs=True
    ),
    "tgi": EngineProfile("tgi", stop_sequence_finish=True, stop_in_text=True, prefill="auto"),
    # llama.cpp's defaults (top-k 40, min-p 0.05; llama-cpp-python's also a repeat penalty of
    # 1.1) change greedy and sampled tokens: a step's distribution is the model's own only
    # without them
    "llamacpp": EngineProfile("llamacpp", extra={"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}),
    "llama-cpp-python": EngineProfile(
        "llama-cpp-python",
        extra={"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0},
        echo_logprobs=True,
    ),
    "ollama": EngineProfile("ollama", prefill="auto"),
    "generic": EngineProfile("generic"),
}
# `specguard serve --mode plain` answers as vLLM does, and takes no engine grammar field
PROFILES["specguard"] = dataclasses.replace(PROFILES["vllm"], name="specguard")


def structured_fields(engine: str, kind: str, source: str, *, chat: bool) -> dict[str, Any]:
    """The request fields that ask `engine` for text in a constraint's language from the start
    of its reply (the table above); {} where it has none for this kind."""
    if kind not in ("json_schema", "regex"):
        return {}
    import json

    schema = json.loads(source) if kind == "json_schema" else None
    if engine == "vllm":
        return {"structured_outputs": {"json": schema} if schema is not None else {"regex": source}}
    if engine == "sglang":
        return {"json_schema": source} if schema is not None else {"regex": source}
    if engine == "llamacpp" and not chat and schema is not None:
        return {"json_schema": schema}
    if chat and engine == "tgi":  # TGI's grammar type, in its chat route's response_format
        value = schema if schema is not None else source
        return {
            "response_format": {"type": "json" if schema is not None else "regex", "value": value}
        }
    if chat and engine == "ollama" and schema is not None:  # the OpenAI API's own field
        strict = {"name": "output", "schema": schema, "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": strict}}
    return {}


def profile(name: str) -> EngineProfile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(k for k in PROFILES if k != "specguard")
        raise InvalidInputError(
            f"engine: unknown value {name!r}; use auto or one of {known}"
        ) from None


def detect(
    http: OpenAICompatibleClient, deadline: float | None = None
) -> tuple[EngineProfile, str]:
    """The engine behind `http`, and what showed it, its probes ending by `deadline`
    (monotonic seconds). Unknown engines get `generic`."""
    owner = _owner(http.get("/v1/models", deadline))
    by_owner = {
        "vllm": "vllm",
        "sglang": "sglang",
        "specguard": "specguard",
        "me": "llama-cpp-python",
        "llamacpp": "llamacpp",
    }
    if owner in by_owner:
        return PROFILES[by_owner[owner]], f"/v1/models owned_by={owner!r}"
    info = http.get("/info", deadline)
    if isinstance(info, dict) and "model_id" in info and "max_input_tokens" in info:
        return PROFILES["tgi"], "/info (text-generation-inference)"
    version = http.get("/api/version", deadline)
    if isinstance(version, dict) and "version" in version:
        return PROFILES["ollama"], "/api/version (Ollama)"
    return PROFILES["generic"], f"no engine recognised (/v1/models owned_by={owner!r})"


def _owner(models: Any) -> str:
    """`owned_by` of the first model `/v1/models` lists; "" for any other shape (a probe reads
    what it can and never fails on what it cannot)."""
    data = models.get("data") if isinstance(models, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    owner = first.get("owned_by") if isinstance(first, dict) else None
    return owner if isinstance(owner, str) else ""


@dataclass
class Choice:
    """A choice as the engine wrote it, before the boundary question is settled."""

    text: str
    finish: str
    reason: Any  # the engine's field naming the matched stop, if it has one
    tokens: list[str] | None  # token texts, with logprobs
    logprobs: list[float] | None
    offsets: list[int] | None
    completion_tokens: int | None
    prompt_tokens: int | None


def read_choice(
    c: dict[str, Any], chat: bool, stop_field: str | None, usage: dict[str, Any]
) -> Choice:
    """One choice of a completions or chat answer, logprobs in either shape."""
    offsets: list[int] | None = None
    if chat:
        text = c["message"]["content"]
        if text is None and c.get("finish_reason") not in ("tool_calls", "function_call"):
            # an empty step would be read at a boundary: a null is not text
            raise InvalidInputError("message.content is null")
        text = text or ""
        content = (c.get("logprobs") or {}).get("content")
        tokens = [str(t["token"]) for t in content] if content else None
        logprobs = [float(t["logprob"]) for t in content] if content else None
        offsets = _offsets(tokens) if tokens is not None else None
    else:
        text = c["text"]
        lp = c.get("logprobs") or {}
        tokens = lp.get("tokens")
        logprobs = [float(x) for x in lp["token_logprobs"]] if lp.get("token_logprobs") else None
        if lp.get("text_offset"):  # some engines count from the start of the prompt
            first = int(lp["text_offset"][0])
            offsets = [int(o) - first for o in lp["text_offset"]]
        elif isinstance(lp.get("content"), list):  # llama.cpp's server: the chat shape
            tokens = [str(t["token"]) for t in lp["content"]]
            logprobs = [float(t["logprob"]) for t in lp["content"]]
            offsets = _offsets(tokens)
    if not isinstance(text, str):
        raise InvalidTypeError("text is not a string")
    return Choice(
        text=text,
        finish=str(c.get("finish_reason") or "stop"),
        reason=c.get(stop_field) if stop_field else None,
        tokens=tokens,
        logprobs=logprobs,
        offsets=offsets,
        completion_tokens=_int(usage.get("completion_tokens"), "usage.completion_tokens"),
        prompt_tokens=_int(usage.get("prompt_tokens"), "usage.prompt_tokens"),
    )


def _offsets(tokens: list[str]) -> list[int]:
    """Each token's character offset in the text the tokens spell."""
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return offsets


def cached_tokens(data: dict[str, Any]) -> int:
    """The prompt tokens the engine reports it did not compute again (its own prefix cache):
    OpenAI's and vLLM's ``usage.prompt_tokens_details.cached_tokens``, else llama.cpp's
    ``timings.cache_n``; 0 where it reports none. A count that is not one is malformed data."""
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        return _int(details["cached_tokens"], "usage.prompt_tokens_details.cached_tokens") or 0
    timings = data.get("timings")
    if isinstance(timings, dict) and timings.get("cache_n") is not None:
        return _int(timings["cache_n"], "timings.cache_n") or 0
    return 0


def _int(x: Any, field: str = "usage") -> int | None:
    """A count the server reported: None when absent; `ValueError` naming the field when it is
    not a finite number of at least 0."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
        raise InvalidInputError(f"{field} is {x!r}, not a count")
    return int(x)


def matched_stop(c: Choice, stops: tuple[str, ...], engine: EngineProfile) -> str | bool | None:
    """The stop string the answer stopped at; None when it ended by itself (EOS, length, a
    content filter); True when the engine does not say (the caller asks the model)."""
    if c.finish in ("length", "eos", "content_filter"):
        return None
    if c.finish == "stop_sequence":  # a stop string matched, whichever engine says so
        return next((s for s in stops if c.text.endswith(s)), stops[0] if stops else None)
    if engine.stop_field:
        return c.reason if isinstance(c.reason, str) and c.reason in stops else None
    if engine.stop_sequence_finish:  # TGI: "stop" is its EOS
        return None
    kept = next((s for s in stops if c.text.endswith(s)), None)
    if kept is not None:
        return kept
    if c.tokens is not None:  # a stop match leaves token text past the returned text
        joined = "".join(c.tokens)
        if joined.startswith(c.text) and len(joined) > len(c.text):
            return _stop_starting(joined[len(c.text) :], stops)
        return None
    return True if stops else None


def _stop_starting(rest: str, stops: tuple[str, ...]) -> str:
    """The stop string that `rest` (what the model wrote after the kept text) begins with."""
    for s in stops:
        if rest.startswith(s) or s.startswith(rest):
            return s
    return stops[0]


def stop_after_probe(next_text: str, stops: tuple[str, ...]) -> str | None:
    """What one more greedy token says: empty, the model ended (None); else the stop it wrote."""
    return _stop_starting(next_text, stops) if next_text else None

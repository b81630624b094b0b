"""Reading and preparing a request: authorisation, the body (JSON only, plain or gzip/deflate
encoded, bounded in bytes before and after decoding, in time and in depth), then typing,
rendering and tokenising it for the served model (CPU work, run off the event loop by the
caller)."""

from __future__ import annotations

import asyncio
import hmac
import json
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .schemas import ChatRequest, CompletionRequest, content_text
from .served import GenRequest, ServedModel
from .state import HTTPError, ServerState

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..chat import ChatCall


def authorize(request: Request, state: ServerState) -> None:
    key = state.limits.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise HTTPError(
            401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key"
        )


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        depth = max(depth, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return depth


def parse_json(body: bytes, max_depth: int) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPError(400, f"malformed JSON body: {err}") from None
    except RecursionError:
        raise HTTPError(400, f"JSON nested deeper than {max_depth} levels") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "the body must be a JSON object")
    if json_depth(data) > max_depth:
        raise HTTPError(400, f"JSON nested deeper than {max_depth} levels")
    return data


# Content-Encoding -> zlib window bits: gzip, or zlib-wrapped deflate (auto-detected either way)
ENCODINGS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": 32 + zlib.MAX_WBITS,
}


def body_encoding(request: Request) -> str | None:
    """The body's Content-Encoding (None: plain), or 415 naming an encoding not accepted."""
    value = request.headers.get("content-encoding", "").strip().lower()
    if value in ("", "identity"):
        return None
    if value not in ENCODINGS:
        raise HTTPError(
            415,
            f"Content-Encoding {value!r} is not supported (use gzip, deflate or none)",
            code="unsupported_content_encoding",
        )
    return value


def _inflate(raw: bytes, wbits: int, limit: int) -> tuple[bytes, Any]:
    """At most ``limit + 1`` bytes of `raw` decompressed, and the decompressor (for its end)."""
    inflater = zlib.decompressobj(wbits)
    return inflater.decompress(raw, limit + 1), inflater


def decode_body(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """`raw` decompressed, at most `limit` bytes of it: a body that inflates past the limit (a
    zip bomb) is refused with 413 before more than ``limit + 1`` bytes are produced."""
    if encoding is None:
        return raw
    try:
        try:
            data, inflater = _inflate(raw, ENCODINGS[encoding], limit)
        except zlib.error:
            if encoding != "deflate":
                raise
            data, inflater = _inflate(raw, -zlib.MAX_WBITS, limit)  # deflate without a header
    except zlib.error as err:
        raise HTTPError(400, f"malformed {encoding} body: {err}") from None
    if len(data) > limit:
        raise HTTPError(413, f"request body over {limit} bytes once decompressed ({encoding})")
    if not inflater.eof:
        raise HTTPError(400, f"malformed {encoding} body: the compressed stream is truncated")
    if inflater.unused_data:
        raise HTTPError(400, f"malformed {encoding} body: data after the compressed stream")
    return data


async def read_json(request: Request, state: ServerState) -> dict[str, Any]:
    """The body as a JSON object: application/json only, plain or gzip/deflate encoded, bounded
    in bytes (before and after decoding), time and depth."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPError(415, f"Content-Type must be application/json, got {ctype or 'none'!r}")
    encoding = body_encoding(request)
    limit = state.limits.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPError(413, f"request body over {limit} bytes")

    async def body() -> bytes:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise HTTPError(413, f"request body over {limit} bytes")
        return bytes(data)

    try:
        raw = await asyncio.wait_for(body(), state.limits.body_timeout)
    except asyncio.TimeoutError:
        raise HTTPError(
            408, f"request body not received within {state.limits.body_timeout} s"
        ) from None

    def decode_and_parse() -> dict[str, Any]:
        return parse_json(decode_body(raw, encoding, limit), state.limits.max_json_depth)

    return await asyncio.to_thread(decode_and_parse)


@dataclass
class Prepared:
    """A typed request made ready for the served model."""

    req: CompletionRequest | ChatRequest
    gen: GenRequest
    call: ChatCall | None = None  # chat requests: how the reply is parsed
    json_reply: bool = False  # response_format served as a forced call


def _check_model(req: CompletionRequest | ChatRequest, served: ServedModel) -> None:
    if req.model != served.name:
        raise HTTPError(
            404,
            f"model {req.model!r} is not served here (served: {served.name!r})",
            code="model_not_found",
            param="model",
        )
    if req.n > served.max_n:
        raise HTTPError(400, f"n: at most {served.max_n} in this mode", param="n")
    if req.stream and req.n > 1:
        raise HTTPError(400, "n > 1 cannot stream", param="n")


def _check_prompts(req: CompletionRequest) -> None:
    """Completion prompts are checked as chat messages are: text UTF-8 can encode (a lone
    surrogate is named with its position, not left to the tokenizer)."""
    from ..engine.backends import check_text

    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    for i, text in enumerate(prompts):
        try:
            check_text(text, "prompt" if isinstance(req.prompt, str) else f"prompt[{i}]")
        except ValueError as err:
            raise HTTPError(400, str(err), param="prompt") from None


def chat_dicts(req: ChatRequest) -> list[dict[str, Any]]:
    """Typed messages -> chat-template dicts (tool-call arguments as objects)."""
    from ..chat import tool_call_dict

    out = []
    for m in req.messages:
        msg: dict[str, Any] = {
            "role": "system" if m.role == "developer" else m.role,
            "content": content_text(m.content),
        }
        if m.role == "assistant" and m.tool_calls:
            msg["tool_calls"] = [
                tool_call_dict(tc.id, tc.function.name, tc.function.args) for tc in m.tool_calls
            ]
        if m.role == "tool":
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def _tools(req: ChatRequest) -> tuple[list[dict[str, Any]] | None, Any, bool]:
    """Tools and tool_choice, with a JSON ``response_format`` served as a forced call of a tool
    whose parameters are its schema (what `with_structured_output` does)."""
    rf = req.response_format
    if rf is not None and rf.type != "text":
        schema = rf.json_schema
        fn = {
            "name": schema.name if schema else "json_object",
            "description": (schema.description if schema else None) or "The reply as JSON.",
            "parameters": schema.schema_ if schema else {"type": "object"},
        }
        return [{"type": "function", "function": fn}], fn["name"], True
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    choice: Any = req.tool_choice
    if isinstance(choice, BaseModel):
        choice = choice.model_dump()
    if choice == "none":
        tools = None
    return tools, None if choice == "none" else choice, False


def _check_schemas(req: ChatRequest) -> None:
    """400 naming the field for a ``response_format`` schema or a tool's parameters that no
    JSON value satisfies: refused here, before a grammar is built or a step generated."""
    from ..constraint.satisfiable import schema_unsatisfiable

    rf = req.response_format
    named = (
        [("response_format.json_schema.schema", rf.json_schema.schema_)]
        if rf and rf.json_schema
        else []
    )
    named += [
        (f"tools[{i}].function.parameters", t.function.parameters)
        for i, t in enumerate(req.tools or [])
    ]
    for param, schema in named:
        why = schema_unsatisfiable(schema)
        if why is not None:
            raise HTTPError(400, f"{param}: no JSON value satisfies the schema: {why}", param=param)


def prepare(data: dict[str, Any], chat: bool, served: ServedModel) -> Prepared:
    """Type, render and tokenise a request (runs off the event loop: it is CPU work)."""
    from ..chat import prepare_chat

    if chat:
        req: CompletionRequest | ChatRequest = ChatRequest.model_validate(data)
        assert isinstance(req, ChatRequest)
        _check_model(req, served)
        _check_schemas(req)
        tools, choice, json_reply = _tools(req)
        call = prepare_chat(
            served.lm,
            chat_dicts(req),
            tools=tools,
            tool_choice=choice,
            continue_final=req.continue_final_message,
            tool_call_format_name=served.tool_call_format,
            parallel_tool_calls=req.parallel_tool_calls,
        )
        prompt, budget, logprobs, special = call.prompt, req.token_budget, req.logprobs, False
    else:
        req = CompletionRequest.model_validate(data)
        assert isinstance(req, CompletionRequest)
        _check_model(req, served)
        _check_prompts(req)
        call, json_reply = None, False
        prompt, budget, logprobs, special = req.text, req.max_tokens, req.logprobs is not None, True
    if logprobs and not served.supports_logprobs:
        raise HTTPError(400, "logprobs are not available in this mode", param="logprobs")
    if not prompt.strip():
        raise HTTPError(400, "prompt is empty", param="prompt")
    gen = GenRequest(
        prompt=prompt,
        max_tokens=budget,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stops,
        seed=req.seed,
        n=req.n,
        logprobs=logprobs,
        include_stop=req.include_stop_str_in_output,
        add_special_tokens=special,
        segmenter="tool_call" if call is not None and call.fmt is not None else None,
        tool_call_format=call.fmt.name if call is not None and call.fmt is not None else None,
        parallel_tool_calls=isinstance(req, ChatRequest) and req.parallel_tool_calls,
        constraint=call.constraint if call is not None else None,
    )
    served.check_prompt(gen.prompt, gen.add_special_tokens)
    return Prepared(req, gen, call, json_reply)

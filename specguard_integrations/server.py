"""`specguard serve`: an OpenAI-compatible HTTP server.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streaming and not),
``GET /v1/models``, ``GET /health``. Two modes:

- ``specguard``: every request runs the SpecGuard step loop; the step records travel in a
  ``specguard`` extension field (the whole list in a response, one ``step`` per stream chunk).
- ``plain``: one model decodes alone, with token ``logprobs`` and vLLM's ``stop_reason`` and
  ``include_stop_str_in_output``; this is what `EndpointTarget` / `EndpointDraft` talk to when
  no vLLM is at hand, and how the bundled target is served in the tests.

Generations run on a pool of `workers` threads. At most `max_queue` more wait; beyond that a
request gets 503 at once. Bodies over `max_body_bytes` get 413, malformed JSON and invalid
parameters 400, an unknown model 404. On shutdown the server stops accepting, lets in-flight
requests finish for `grace` seconds, then cancels the rest between steps (their clients see the
connection close, and no half-written response is sent as if complete).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from .config import SpecGuardConfig
    from .engine.lm import LocalCausalLM
    from .engine.loop import SpecGuard
    from .types import StepRecord

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- requests
class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields this server ignores

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    include_stop_str_in_output: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else v or []
        if any(not s for s in items):
            raise ValueError("stop strings must be non-empty")
        if len(items) > 16:
            raise ValueError("at most 16 stop strings")
        return v

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(_Common):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatRequest(_Common):
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    logprobs: bool = False
    max_completion_tokens: int | None = Field(None, ge=1)
    continue_final_message: bool = False  # vLLM extension
    add_generation_prompt: bool = True  # vLLM extension


# ---------------------------------------------------------------------------- generation
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

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


OnDelta = Callable[[str, "StepRecord | None"], None]


class Cancelled(RuntimeError):
    pass


class ServedModel:
    """What the server runs: a name, a chat template, and `generate`."""

    name: str
    lm: LocalCausalLM  # whose tokenizer renders chat prompts
    supports_logprobs: bool = False
    max_n: int = 1

    def generate(self, req: GenRequest, on_delta: OnDelta, cancelled: threading.Event) -> GenOutput:
        raise NotImplementedError

    def local_models(self) -> list[LocalCausalLM]:
        return [self.lm]

    def check_prompt(self, prompt: str, add_special_tokens: bool) -> None:
        """Raise `ValueError` naming the problem when the prompt cannot be generated from."""
        from .engine.backends import check_prompt

        for lm in self.local_models():
            check_prompt(
                lm, lm.encode_prompt(prompt, add_special_tokens=add_special_tokens), prompt
            )


class SpecGuardServed(ServedModel):
    """Each request is one `SpecGuard.stream` run; one delta per decided step."""

    def __init__(self, engine: SpecGuard, config: SpecGuardConfig, name: str = "specguard") -> None:
        from .chat import chat_lm

        self.engine = engine
        self.config = config
        self.name = name
        self.lm = chat_lm(engine)

    def local_models(self) -> list[LocalCausalLM]:
        from .engine.lm import LocalCausalLM

        found = [getattr(b, "lm", None) for b in (self.engine.draft, self.engine.target)]
        return [lm for lm in found if isinstance(lm, LocalCausalLM)]

    def generate(self, req: GenRequest, on_delta: OnDelta, cancelled: threading.Event) -> GenOutput:
        from ._adapter import llm_params

        cfg = llm_params(
            self.config, temperature=req.temperature, max_tokens=req.max_tokens, seed=req.seed
        ).merged(top_p=req.top_p, segmenter=req.segmenter)
        stream = self.engine.stream(
            req.prompt, config=cfg, stop=req.stop, add_special_tokens=req.add_special_tokens
        )
        try:
            for record in stream:
                if cancelled.is_set():
                    raise Cancelled("generation cancelled")
                on_delta(record.text, record)
        finally:
            stream.close()
        result = stream.result
        assert result is not None
        finish = {"eos": "stop", "final_answer": "stop", "stop": "stop", "tool_call": "tool_calls"}
        choice = Choice(
            text=result.text,
            finish_reason=finish.get(result.finish_reason, "length"),
            completion_tokens=result.output_tokens,
        )
        return GenOutput(
            [choice],
            result.prompt_tokens,
            {
                "summary": result.summary(),
                "steps": [s.model_dump(mode="json") for s in result.steps],
            },
        )


class PlainServed(ServedModel):
    """One local model decoding alone (token deltas, logprobs, stop_reason)."""

    supports_logprobs = True
    max_n = 16

    def __init__(self, lm: LocalCausalLM, name: str | None = None) -> None:
        self.lm = lm
        self.name = name or lm.name

    def generate(self, req: GenRequest, on_delta: OnDelta, cancelled: threading.Event) -> GenOutput:
        import torch

        from .engine.plain import plain_stream

        gen = None
        if req.seed is not None:
            gen = torch.Generator(device=self.lm.device).manual_seed(req.seed)
        choices, prompt_tokens = [], 0
        for _ in range(req.n):
            stream = plain_stream(
                self.lm,
                req.prompt,
                max_tokens=req.max_tokens or 256,
                temperature=req.temperature if req.temperature is not None else 1.0,
                top_p=req.top_p or 1.0,
                stop=req.stop,
                include_stop=req.include_stop,
                generator=gen,
                add_special_tokens=req.add_special_tokens,
                cancelled=cancelled.is_set,
            )
            while True:
                try:
                    delta = next(stream)
                except StopIteration as done:
                    r = done.value
                    break
                if req.n == 1:
                    on_delta(delta, None)
            prompt_tokens = r.prompt_tokens
            choices.append(
                Choice(
                    text=r.text,
                    finish_reason=r.finish_reason,
                    stop_reason=r.stop_reason,
                    tokens=r.tokens,
                    logprobs=r.logprobs,
                    offsets=r.offsets,
                    completion_tokens=r.completion_tokens,
                )
            )
        return GenOutput(choices, prompt_tokens)


# ---------------------------------------------------------------------------- chat helpers
def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            elif isinstance(p, str):
                parts.append(p)
            else:
                raise ValueError("only text content parts are supported")
        return "".join(parts)
    raise ValueError(f"message content must be a string or a list of parts, got {content!r}")


def _hf_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages -> chat-template messages (tool-call arguments as objects)."""
    out = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise ValueError(f"messages[{i}].role: unknown role {role!r}")
        msg: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": _content_text(m.get("content")),
        }
        if m.get("tool_calls"):
            calls = []
            for tc in m["tool_calls"]:
                fn = tc.get("function", {})
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except json.JSONDecodeError as err:
                        raise ValueError(
                            f"messages[{i}].tool_calls: arguments are not JSON: {err}"
                        ) from err
                calls.append(
                    {"id": tc.get("id"), "type": "function", "function": {**fn, "arguments": args}}
                )
            msg["tool_calls"] = calls
        if role == "tool":
            msg["tool_call_id"] = m.get("tool_call_id")
        out.append(msg)
    return out


@dataclass
class ChatPrompt:
    prompt: str
    prefix: str  # forced text the reply starts with (a tool-call opening)
    fmt: Any  # ToolCallFormat | None


def render_chat_request(lm: LocalCausalLM, req: ChatRequest) -> ChatPrompt:
    from .chat import normalise_tool_choice, tool_call_format

    msgs = _hf_messages(req.messages)
    tools = req.tools or None
    if req.continue_final_message:
        if msgs[-1]["role"] != "assistant":
            raise ValueError("continue_final_message needs a final assistant message")
        text = lm.render_chat(msgs[:-1], tools=tools) + msgs[-1]["content"]
    else:
        text = lm.render_chat(msgs, tools=tools)
    if not tools:
        if req.tool_choice not in (None, "auto", "none"):
            raise ValueError("tool_choice was given but no tools")
        return ChatPrompt(text, "", None)
    fmt = tool_call_format(lm)
    forced = normalise_tool_choice(req.tool_choice, tools)
    prefix = "" if forced is None else fmt.forced_prefix(forced)
    return ChatPrompt(text + prefix, prefix, fmt)


def _openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
        }
        for c in calls
    ]


# ---------------------------------------------------------------------------- server state
@dataclass
class ServerState:
    served: ServedModel
    workers: int = 1
    max_queue: int = 32
    max_body_bytes: int = 1_000_000
    pool: ThreadPoolExecutor = field(init=False)
    admitted: int = 0  # running + waiting
    running: int = 0
    max_running: int = 0
    served_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel_all: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_queue < 0 or self.max_body_bytes < 1:
            raise ValueError("workers >= 1, max_queue >= 0 and max_body_bytes >= 1 are required")
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="specguard-serve")

    def admit(self) -> bool:
        with self.lock:
            if self.admitted >= self.workers + self.max_queue:
                return False
            self.admitted += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.admitted -= 1

    def run(self, fn: Callable[[], GenOutput], cancelled: threading.Event) -> GenOutput:
        """Body of a worker thread: counts concurrency, honours server-wide cancellation."""
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.cancel_all.is_set() or cancelled.is_set():
                raise Cancelled("server is shutting down")
            return fn()
        finally:
            with self.lock:
                self.running -= 1
                self.served_requests += 1


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code,
        )


def _error_body(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code or status}}


# ---------------------------------------------------------------------------- app
def create_app(
    served: ServedModel,
    *,
    workers: int = 1,
    max_queue: int = 32,
    max_body_bytes: int = 1_000_000,
) -> Starlette:
    """The ASGI app serving `served`; run it with uvicorn (`serve` does)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    state = ServerState(served, workers, max_queue, max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        yield
        # uvicorn has waited out the grace period: stop what is still running between steps
        state.cancel_all.set()
        state.pool.shutdown(wait=False, cancel_futures=True)

    async def read_json(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > state.max_body_bytes:
            raise HTTPError(413, f"request body over {state.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > state.max_body_bytes:
                raise HTTPError(413, f"request body over {state.max_body_bytes} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HTTPError(400, f"malformed JSON body: {err}") from err
        if not isinstance(data, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return data

    def parse(model: type[_Common], data: dict[str, Any]) -> Any:
        try:
            req: _Common = model.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "body"
            raise HTTPError(400, f"{where}: {first['msg']}", param=where) from err
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
        return req

    def usage(out: GenOutput) -> dict[str, int]:
        return {
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens,
        }

    def admit() -> None:
        """Take a queue slot or answer 503 now (before any streamed 200 is sent)."""
        if state.cancel_all.is_set():
            raise HTTPError(503, "server is shutting down", kind="server_error")
        if not state.admit():
            raise HTTPError(
                503, f"server busy: {state.admitted} requests admitted", kind="server_error"
            )

    async def run_generation(
        gen: GenRequest, on_delta: OnDelta, cancelled: threading.Event
    ) -> GenOutput:
        """Run an admitted request on the worker pool; its queue slot is released at the end."""
        try:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(
                state.pool, state.run, lambda: served.generate(gen, on_delta, cancelled), cancelled
            )
            try:
                return await fut
            except asyncio.CancelledError:
                cancelled.set()  # the client left or the server is stopping: stop between steps
                raise
        finally:
            state.release()

    def to_http(err: Exception) -> HTTPError:
        from .engine.remote import EndpointError

        if isinstance(err, HTTPError):
            return err
        if isinstance(err, Cancelled):
            return HTTPError(503, str(err), kind="server_error")
        if isinstance(err, EndpointError):
            return HTTPError(502, str(err), kind="server_error")
        if isinstance(err, (ValueError, TypeError)):
            return HTTPError(400, str(err))
        log.exception("request failed")
        return HTTPError(500, f"internal error: {type(err).__name__}: {err}", kind="server_error")

    def error_response(err: Exception) -> Response:
        h = to_http(err)
        return JSONResponse(_error_body(h.status, h.message, h.kind, h.param, h.code), h.status)

    async def endpoint(request: Request, chat: bool) -> Response:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        try:
            data = await read_json(request)
            if chat:
                req: Any = parse(ChatRequest, data)
                rendered = render_chat_request(served.lm, req)
                prompt, max_tokens, want_lp = (
                    rendered.prompt,
                    req.max_completion_tokens or req.max_tokens,
                    req.logprobs,
                )
                special = False  # the chat template places its own special tokens
            else:
                req = parse(CompletionRequest, data)
                rendered = ChatPrompt(req.text, "", None)
                prompt, max_tokens, want_lp = req.text, req.max_tokens, req.logprobs is not None
                special = True
            if want_lp and not served.supports_logprobs:
                raise HTTPError(400, "logprobs are not available in this mode", param="logprobs")
            if not prompt.strip():
                raise HTTPError(400, "prompt is empty", param="prompt")
            gen = GenRequest(
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                stop=req.stops,
                seed=req.seed,
                n=req.n,
                logprobs=want_lp,
                include_stop=req.include_stop_str_in_output,
                add_special_tokens=special,
                segmenter="tool_call" if rendered.fmt is not None else None,
            )
            served.check_prompt(gen.prompt, gen.add_special_tokens)
            admit()
        except Exception as err:
            return error_response(err)
        obj = "chat.completion" if chat else "text_completion"

        def finish_choice(i: int, c: Choice) -> dict[str, Any]:
            if chat:
                return chat_choice(i, c, rendered)
            lp = None
            if gen.logprobs and c.logprobs is not None:
                lp = {
                    "tokens": c.tokens,
                    "token_logprobs": c.logprobs,
                    "top_logprobs": None,
                    "text_offset": c.offsets,
                }
            return {
                "index": i,
                "text": c.text,
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
                "logprobs": lp,
            }

        if not req.stream:
            try:
                out = await run_generation(gen, lambda _d, _r: None, threading.Event())
            except Exception as err:
                return error_response(err)
            body: dict[str, Any] = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": served.name,
                "choices": [finish_choice(i, c) for i, c in enumerate(out.choices)],
                "usage": usage(out),
            }
            if out.specguard is not None:
                body["specguard"] = out.specguard
            return JSONResponse(body)
        return stream_response(req, gen, rid, created, chat, rendered, finish_choice)

    def chat_choice(i: int, c: Choice, rendered: ChatPrompt) -> dict[str, Any]:
        from .chat import parse_reply

        message: dict[str, Any] = {"role": "assistant", "content": c.text}
        finish = c.finish_reason
        if rendered.fmt is not None:
            parsed = parse_reply(rendered.prefix + c.text, rendered.fmt)
            message["content"] = parsed.content or None
            if parsed.tool_calls:
                message["tool_calls"] = _openai_tool_calls(parsed.tool_calls)
                finish = "tool_calls"
            elif parsed.invalid_tool_calls:
                # keep the malformed call visible instead of dropping it
                message["content"] = rendered.prefix + c.text
                finish = "stop"
        elif finish == "tool_calls":
            finish = "stop"
        lp: dict[str, Any] | None = None
        if c.logprobs is not None and c.tokens is not None:
            lp = {
                "content": [
                    {"token": t, "logprob": p, "bytes": None, "top_logprobs": []}
                    for t, p in zip(c.tokens, c.logprobs, strict=True)
                ]
            }
        return {
            "index": i,
            "message": message,
            "finish_reason": finish,
            "stop_reason": c.stop_reason,
            "logprobs": lp,
        }

    def stream_response(
        req: Any,
        gen: GenRequest,
        rid: str,
        created: int,
        chat: bool,
        rendered: ChatPrompt,
        finish_choice: Callable[[int, Choice], dict[str, Any]],
    ) -> Response:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()
        obj = "chat.completion.chunk" if chat else "text_completion"
        tools = rendered.fmt is not None  # tool calls are parsed once the reply is complete

        def on_delta(delta: str, record: StepRecord | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("delta", (delta, record)))

        def chunk(choice: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
            body: dict[str, Any] = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": served.name,
                "choices": [choice],
            }
            if extra:
                body.update(extra)
            return f"data: {json.dumps(body)}\n\n"

        async def produce() -> None:
            try:
                out = await run_generation(gen, on_delta, cancelled)
                queue.put_nowait(("done", out))
            except Exception as err:
                queue.put_nowait(("error", err))

        async def events():  # type: ignore[no-untyped-def]
            task = asyncio.create_task(produce())
            try:
                if chat:
                    yield chunk(
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                            "logprobs": None,
                        }
                    )
                while True:
                    kind, payload = await queue.get()
                    if kind == "delta":
                        delta, record = payload
                        extra = (
                            {"specguard": {"step": record.model_dump(mode="json")}}
                            if (record is not None)
                            else None
                        )
                        text = "" if tools else delta
                        if not text and extra is None:
                            continue
                        if chat:
                            yield chunk(
                                {
                                    "index": 0,
                                    "delta": {"content": text},
                                    "finish_reason": None,
                                    "logprobs": None,
                                },
                                extra,
                            )
                        else:
                            yield chunk(
                                {"index": 0, "text": text, "finish_reason": None, "logprobs": None},
                                extra,
                            )
                    elif kind == "error":
                        h = to_http(payload)
                        body = _error_body(h.status, h.message, h.kind, h.param, h.code)
                        yield f"data: {json.dumps(body)}\n\n"
                        return
                    else:
                        out: GenOutput = payload
                        final = finish_choice(0, out.choices[0])
                        extra = (
                            {"specguard": {"summary": out.specguard["summary"]}}
                            if (out.specguard)
                            else None
                        )
                        if chat:
                            delta_msg: dict[str, Any] = {}
                            if tools:
                                msg = final["message"]
                                if msg.get("content"):
                                    delta_msg["content"] = msg["content"]
                                if msg.get("tool_calls"):
                                    delta_msg["tool_calls"] = [
                                        {"index": j, **tc} for j, tc in enumerate(msg["tool_calls"])
                                    ]
                            yield chunk(
                                {
                                    "index": 0,
                                    "delta": delta_msg,
                                    "finish_reason": final["finish_reason"],
                                    "logprobs": None,
                                },
                                extra,
                            )
                        else:
                            yield chunk(
                                {
                                    "index": 0,
                                    "text": "",
                                    "finish_reason": final["finish_reason"],
                                    "stop_reason": final.get("stop_reason"),
                                    "logprobs": None,
                                },
                                extra,
                            )
                        if (req.stream_options or {}).get("include_usage"):
                            body = {
                                "id": rid,
                                "object": obj,
                                "created": created,
                                "model": served.name,
                                "choices": [],
                                "usage": usage(out),
                            }
                            yield f"data: {json.dumps(body)}\n\n"
                        yield "data: [DONE]\n\n"
                        return
            finally:
                if not task.done():
                    cancelled.set()
                    task.cancel()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def completions(request: Request) -> Response:
        return await endpoint(request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await endpoint(request, chat=True)

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": served.name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "specguard",
                        "max_model_len": served.lm.context_window,
                    }
                ],
            }
        )

    async def health(request: Request) -> Response:
        with state.lock:
            info = {
                "status": "draining" if state.cancel_all.is_set() else "ok",
                "model": served.name,
                "running": state.running,
                "admitted": state.admitted,
                "max_running": state.max_running,
                "served_requests": state.served_requests,
                "workers": state.workers,
                "max_queue": state.max_queue,
            }
        return JSONResponse(info)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return JSONResponse(
            _error_body(
                status,
                f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}",
            ),
            status,
        )

    app = Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )
    app.state.specguard = state
    return app


def serve(
    served: ServedModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_queue: int = 32,
    max_body_bytes: int = 1_000_000,
    grace: float = 30.0,
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info",
) -> None:
    """Run the server until SIGINT/SIGTERM, then shut down gracefully (see module docs)."""
    try:
        import starlette  # noqa: F401 - checked here so the error names the extra
        import uvicorn
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "specguard serve needs the [serve] extra: pip install 'specguard-integrations[serve]'"
        ) from err
    import contextlib
    import signal

    class _Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its graceful shutdown (exit 143); a drained server
        here exits 0, so process managers see a clean stop."""

        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            old = {s: signal.signal(s, self.handle_exit) for s in sigs}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    app = create_app(served, workers=workers, max_queue=max_queue, max_body_bytes=max_body_bytes)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(grace) if grace > 0 else None,
    )
    _Server(config).run()

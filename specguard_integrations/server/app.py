"""The ASGI app: routes over ``app.state.specguard`` (a `ServerState`).

``POST /v1/completions``, ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models``,
``GET /health``. A request is read (JSON only, bounded in size, depth and time), typed
(`schemas`), rendered and tokenised off the event loop, admitted to the worker pool or answered
503, and generated; its answer is built by `openai_format`. Errors are OpenAI-shaped: 4xx name
the problem and the parameter, an unexpected failure is logged and answered with a generic 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from . import openai_format as fmt
from .schemas import ChatRequest, CompletionRequest, content_text
from .served import Cancelled, GenOutput, GenRequest, OnDelta, ServedModel

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from ..chat import ChatCall, ReplyStream
    from ..types import StepRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What the server admits. Every field is a `specguard serve` flag."""

    workers: int = 1  # generations run at once
    max_queue: int = 32  # admitted requests waiting beyond the workers (then 503)
    max_body_bytes: int = 1_000_000  # larger bodies get 413
    max_json_depth: int = 64  # deeper nesting gets 400
    body_timeout: float = 30.0  # seconds to receive a whole body (then 408)
    api_key: str | None = None  # required as a bearer token on /v1 routes when set

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_queue < 0 or self.max_body_bytes < 1:
            raise ValueError("workers >= 1, max_queue >= 0 and max_body_bytes >= 1 are required")
        if self.body_timeout <= 0 or self.max_json_depth < 2:
            raise ValueError("body_timeout > 0 and max_json_depth >= 2 are required")


@dataclass
class ServerState:
    served: ServedModel
    limits: Limits = field(default_factory=Limits)
    admitted: int = 0  # running + waiting
    running: int = 0
    max_running: int = 0
    served_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel_all: threading.Event = field(default_factory=threading.Event)
    pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="specguard-serve")

    def admit(self) -> None:
        """Take a queue slot or answer 503 now (before any streamed 200 is sent)."""
        if self.cancel_all.is_set():
            raise HTTPError(503, "server is shutting down", kind="server_error")
        with self.lock:
            if self.admitted >= self.limits.workers + self.limits.max_queue:
                raise HTTPError(
                    503, f"server busy: {self.admitted} requests admitted", kind="server_error"
                )
            self.admitted += 1

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

    async def generate(
        self, gen: GenRequest, on_delta: OnDelta, cancelled: threading.Event
    ) -> GenOutput:
        """Run an admitted request on the worker pool; its queue slot is released at the end."""
        try:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(
                self.pool,
                self.run,
                lambda: self.served.generate(gen, on_delta, cancelled),
                cancelled,
            )
            try:
                return await fut
            except asyncio.CancelledError:
                cancelled.set()  # the client left or the server is stopping: stop between steps
                raise
        finally:
            self.release()


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

    def response(self) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse(
            fmt.error_body(self.message, self.kind, self.param, self.code), self.status
        )


def to_http(err: BaseException) -> HTTPError:
    """The HTTP answer for an error. Unexpected ones are logged with their traceback and
    answered with a generic 500: internal text never reaches the client."""
    from ..engine.openai_client import EndpointError

    if isinstance(err, HTTPError):
        return err
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        param = fmt.error_param(first["loc"])
        where = f"{param}: " if param else ""
        return HTTPError(400, f"{where}{first['msg']}", param=param)
    if isinstance(err, Cancelled):
        return HTTPError(503, str(err), kind="server_error")
    if isinstance(err, EndpointError):
        return HTTPError(502, f"the target server failed: {err}", kind="server_error")
    if isinstance(err, (ValueError, TypeError)):
        return HTTPError(400, str(err))
    log.error("request failed", exc_info=(type(err), err, err.__traceback__))
    return HTTPError(500, "internal error (logged by the server)", kind="server_error")


# ---------------------------------------------------------------------------- reading
def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.specguard
    return state


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


async def read_json(request: Request, state: ServerState) -> dict[str, Any]:
    """The body as a JSON object: application/json only, bounded in bytes, time and depth."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPError(415, f"Content-Type must be application/json, got {ctype or 'none'!r}")
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
    return await asyncio.to_thread(parse_json, raw, state.limits.max_json_depth)


# ---------------------------------------------------------------------------- preparing
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


def prepare(data: dict[str, Any], chat: bool, served: ServedModel) -> Prepared:
    """Type, render and tokenise a request (runs off the event loop: it is CPU work)."""
    from ..chat import prepare_chat

    if chat:
        req: CompletionRequest | ChatRequest = ChatRequest.model_validate(data)
        assert isinstance(req, ChatRequest)
        _check_model(req, served)
        tools, choice, json_reply = _tools(req)
        call = prepare_chat(
            served.lm,
            chat_dicts(req),
            tools=tools,
            tool_choice=choice,
            continue_final=req.continue_final_message,
        )
        prompt, budget, logprobs, special = call.prompt, req.token_budget, req.logprobs, False
    else:
        req = CompletionRequest.model_validate(data)
        assert isinstance(req, CompletionRequest)
        _check_model(req, served)
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
    )
    served.check_prompt(gen.prompt, gen.add_special_tokens)
    return Prepared(req, gen, call, json_reply)


# ---------------------------------------------------------------------------- routes
async def _answer(request: Request, chat: bool) -> Response:
    from starlette.responses import JSONResponse, StreamingResponse

    state = _state(request)
    try:
        authorize(request, state)
        data = await read_json(request, state)
        prep = await asyncio.to_thread(prepare, data, chat, state.served)
        state.admit()
    except Exception as err:
        return to_http(err).response()
    ids = _Ids.new(chat, state.served.name)
    if prep.req.stream:
        return StreamingResponse(_events(state, prep, ids), media_type="text/event-stream")
    cancelled = threading.Event()
    try:
        out = await _until_disconnect(
            request, state.generate(prep.gen, _ignore, cancelled), cancelled
        )
    except Exception as err:
        return to_http(err).response()
    if chat:
        steps = _steps(state.served, out)
        choices = [
            fmt.chat_choice(i, c, prep.call, prep.json_reply, steps)
            for i, c in enumerate(out.choices)
        ]
    else:
        choices = [
            fmt.completion_choice(i, c, prep.gen.logprobs) for i, c in enumerate(out.choices)
        ]
    return JSONResponse(fmt.response_body(ids.rid, ids.obj, ids.created, ids.model, choices, out))


def _ignore(_delta: str, _record: StepRecord | None) -> None:
    return None


def _steps(served: ServedModel, out: GenOutput) -> list[str] | None:
    """Step texts for the reasoning split, when the served model splits and wrote steps."""
    if not served.reasoning or out.specguard is None:
        return None
    return [s["text"] for s in out.specguard["steps"]]


async def _until_disconnect(request: Request, work: Any, cancelled: threading.Event) -> GenOutput:
    """Await a non-streaming generation; if the client goes away first, stop it between steps."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            cancelled.set()
        return await task
    finally:
        watcher.cancel()


@dataclass(frozen=True)
class _Ids:
    rid: str
    obj: str
    chunk_obj: str
    created: int
    model: str

    @classmethod
    def new(cls, chat: bool, model: str) -> _Ids:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        obj = "chat.completion" if chat else "text_completion"
        return cls(rid, obj, obj + ".chunk" if chat else obj, int(time.time()), model)

    def chunk(self, choice: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> str:
        return fmt.sse(
            fmt.chunk_body(self.rid, self.chunk_obj, self.created, self.model, choice, extra)
        )


async def _events(state: ServerState, prep: Prepared, ids: _Ids) -> AsyncIterator[str]:
    """The SSE stream: a role chunk (chat), one chunk per delta, the final chunk, usage, DONE.
    Tool calls are parsed once the reply is complete, so a tool reply streams no text."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()
    chat = isinstance(prep.req, ChatRequest)

    def on_delta(delta: str, record: StepRecord | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("delta", (delta, record)))

    async def produce() -> None:
        try:
            queue.put_nowait(("done", await state.generate(prep.gen, on_delta, cancelled)))
        except Exception as err:
            queue.put_nowait(("error", err))

    task = asyncio.create_task(produce())
    reply = _reply_stream(state, prep)
    try:
        if chat:
            yield ids.chunk(fmt.delta_choice(True, delta={"role": "assistant", "content": ""}))
        while True:
            kind, payload = await queue.get()
            if kind == "delta":
                line = _delta_chunk(ids, prep, reply, *payload)
                if line:
                    yield line
                continue
            if kind == "error":
                h = to_http(payload)
                yield fmt.sse(fmt.error_body(h.message, h.kind, h.param, h.code))
            else:
                for line in _final_chunks(ids, prep, reply, payload):
                    yield line
            return
    finally:
        if not task.done():
            cancelled.set()
            task.cancel()


def _reply_stream(state: ServerState, prep: Prepared) -> ReplyStream | None:
    """Chat deltas that add up to the message (stripped, no special tokens, tool calls held)."""
    from ..chat import ReplyStream

    if prep.call is None:
        return None
    return ReplyStream(prep.call, state.served.reasoning and not prep.json_reply)


def _delta_chunk(
    ids: _Ids, prep: Prepared, reply: ReplyStream | None, delta: str, record: StepRecord | None
) -> str | None:
    extra = {"specguard": {"step": record.model_dump(mode="json")}} if record is not None else None
    if reply is None:  # a completion: text as written
        return ids.chunk(fmt.delta_choice(False, delta), extra) if delta or extra else None
    content, reasoning = reply.step(delta, record.finish if record is not None else "")
    if not content and not reasoning and extra is None:
        return None
    return ids.chunk(fmt.delta_choice(True, delta=fmt.text_delta(content, reasoning)), extra)


def _final_chunks(
    ids: _Ids, prep: Prepared, reply: ReplyStream | None, out: GenOutput
) -> list[str]:
    c = out.choices[0]
    extra = {"specguard": {"summary": out.specguard["summary"]}} if out.specguard else None
    if reply is not None:
        steps = [s["text"] for s in out.specguard["steps"]] if out.specguard else [c.text]
        message = fmt.chat_message(c, prep.call, prep.json_reply)
        delta = fmt.final_delta(message, reply.finish(c.text, steps))
        if prep.json_reply:  # the reply is the call's arguments, sent whole at the end
            delta = fmt.text_delta(message.get("content") or "")
        choice = fmt.delta_choice(True, delta=delta, finish_reason=fmt.chat_finish(c, message))
    else:
        choice = fmt.delta_choice(
            False, "", finish_reason=c.finish_reason, stop_reason=c.stop_reason
        )
    lines = [ids.chunk(choice, extra)]
    options = prep.req.stream_options
    if options is not None and options.include_usage:
        usage = fmt.usage(out.prompt_tokens, out.completion_tokens)
        lines.append(ids.chunk(None, {"usage": usage}))
    lines.append(fmt.sse("[DONE]"))
    return lines


async def completions(request: Request) -> Response:
    return await _answer(request, chat=False)


async def chat_completions(request: Request) -> Response:
    return await _answer(request, chat=True)


async def models(request: Request) -> Response:
    from starlette.responses import JSONResponse

    state = _state(request)
    try:
        authorize(request, state)
    except HTTPError as err:
        return err.response()
    served = state.served
    card = {
        "id": served.name,
        "object": "model",
        "created": 0,
        "owned_by": "specguard",
        "max_model_len": served.lm.context_window,
    }
    return JSONResponse({"object": "list", "data": [card]})


async def health(request: Request) -> Response:
    from starlette.responses import JSONResponse

    state = _state(request)
    with state.lock:
        info = {
            "status": "draining" if state.cancel_all.is_set() else "ok",
            "model": state.served.name,
            "running": state.running,
            "admitted": state.admitted,
            "max_running": state.max_running,
            "served_requests": state.served_requests,
            "workers": state.limits.workers,
            "max_queue": state.limits.max_queue,
        }
    return JSONResponse(info)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 404))
    message = f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}"
    return HTTPError(status, message, code=str(status)).response()


def create_app(served: ServedModel, limits: Limits | None = None, **kwargs: Any) -> Starlette:
    """The ASGI app serving `served`; `kwargs` are `Limits` fields. Run it with uvicorn
    (`run.serve` does)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.routing import Route

    state = ServerState(served, limits or Limits(**kwargs))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # uvicorn has waited out the grace period: stop what is still running between steps
        state.cancel_all.set()
        state.pool.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={404: _not_found, 405: _not_found},
        lifespan=lifespan,
    )
    app.state.specguard = state
    return app

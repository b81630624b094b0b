"""The ASGI app: routes over ``app.state.specguard`` (a `ServerState`).

``POST /v1/completions``, ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health``. A request is read (JSON only, plain or gzip/deflate
encoded, bounded in size, depth and time), typed (`schemas`), rendered and tokenised off the
event loop, admitted to the worker pool or answered 503, and generated; its answer is built by
`openai_format`. Errors are OpenAI-shaped: 4xx name the problem and the parameter, an unexpected
failure is logged and answered with a generic 500.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError
from . import openai_format as fmt
from .requests import Prepared, authorize, prepare, read_json
from .schemas import ChatRequest
from .served import GenOutput, ServedModel
from .state import HTTPError, Limits, ServerState, to_http

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from ..chat import ReplyStream
    from ..types import StepRecord

__all__ = ["Limits", "ServerState", "create_app"]


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.specguard
    return state


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
    return JSONResponse(fmt.response_body(ids.head(ids.obj), choices, out))


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
        return fmt.sse(fmt.chunk_body(self.head(self.chunk_obj), choice, extra))

    def head(self, obj: str) -> dict[str, Any]:
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model}


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
        usage = fmt.usage(out.prompt_tokens, out.completion_tokens, out.cached_tokens)
        lines.append(ids.chunk(None, {"usage": usage}))
    lines.append(fmt.sse("[DONE]"))
    return lines


async def completions(request: Request) -> Response:
    return await _answer(request, chat=False)


async def chat_completions(request: Request) -> Response:
    return await _answer(request, chat=True)


def _card(served: ServedModel) -> dict[str, Any]:
    """The served model as an OpenAI model object."""
    return {
        "id": served.name,
        "object": "model",
        "created": 0,
        "owned_by": "specguard",
        "max_model_len": served.lm.context_window,
    }


async def models(request: Request) -> Response:
    from starlette.responses import JSONResponse

    state = _state(request)
    try:
        authorize(request, state)
    except HTTPError as err:
        return err.response()
    return JSONResponse({"object": "list", "data": [_card(state.served)]})


async def model(request: Request) -> Response:
    """``GET /v1/models/{id}`` (the SDKs' ``models.retrieve``): the served model, else 404."""
    from starlette.responses import JSONResponse

    state = _state(request)
    name = request.path_params["model_id"]
    try:
        authorize(request, state)
        if name != state.served.name:
            raise HTTPError(
                404,
                f"model {name!r} is not served here (served: {state.served.name!r})",
                param="model",
                code="model_not_found",
            )
    except HTTPError as err:
        return err.response()
    return JSONResponse(_card(state.served))


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

    try:
        from starlette.applications import Starlette
        from starlette.routing import Route
    except ImportError as err:
        raise MissingDependencyError(
            "create_app needs the [serve] extra (starlette is not installed):"
            " pip install 'specguard-integrations[serve]'"
        ) from err

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
            Route("/v1/models/{model_id:path}", model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={404: _not_found, 405: _not_found},
        lifespan=lifespan,
    )
    app.state.specguard = state
    return app

"""Server state: what it admits (`Limits`), its counters and worker pool (`ServerState`), and
how an error becomes an HTTP answer (`HTTPError`, `to_http`)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ..errors import Cancelled, InvalidInputError, SpecGuardError
from . import openai_format as fmt
from .served import GenOutput, GenRequest, OnDelta, ServedModel

if TYPE_CHECKING:
    from starlette.responses import Response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What the server admits. Every field is a `specguard serve` flag."""

    workers: int = 16  # generations run at once (their model calls share grouped forwards)
    max_queue: int = 64  # admitted requests waiting beyond the workers (then 503)
    max_body_bytes: int = 1_000_000  # larger bodies get 413
    max_json_depth: int = 64  # deeper nesting gets 400
    body_timeout: float = 30.0  # seconds to receive a whole body (then 408)
    api_key: str | None = None  # required as a bearer token on /v1 routes when set

    def __post_init__(self) -> None:
        least = {"workers": 1, "max_queue": 0, "max_body_bytes": 1, "max_json_depth": 2}
        for name, low in least.items():
            if getattr(self, name) < low:
                flag = "--" + name.replace("_", "-")
                raise InvalidInputError(
                    f"{name} ({flag}) must be >= {low}, got {getattr(self, name)}"
                )
        if not self.body_timeout > 0:
            raise InvalidInputError(
                f"body_timeout (--body-timeout) must be > 0, got {self.body_timeout}"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidInputError(
                "api_key (--api-key, $SPECGUARD_API_KEY) is empty: an empty key would serve"
                " without authentication; give a key, or neither to serve without one"
            )


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


@dataclass
class HTTPError(SpecGuardError):
    """An answer other than 200, in OpenAI's error shape."""

    status: int
    message: str
    kind: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def response(self) -> Response:
        from starlette.responses import JSONResponse

        body = fmt.error_body(self.message, self.kind, self.param, self.code)
        return JSONResponse(body, self.status)


def to_http(err: BaseException) -> HTTPError:
    """The HTTP answer for an error. Unexpected ones are logged with their traceback and
    answered with a generic 500: internal text never reaches the client."""
    from ..errors import ConfigError, EndpointError, EndpointTimeout

    if isinstance(err, HTTPError):
        return err
    if isinstance(err, (ValidationError, ConfigError)) and err.errors():
        first = err.errors()[0]
        param = fmt.error_param(first["loc"])
        where = f"{param}: " if param else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        return HTTPError(400, f"{where}{message}", param=param)
    if isinstance(err, Cancelled):
        return HTTPError(503, str(err), kind="server_error")
    if isinstance(err, EndpointTimeout):
        return HTTPError(504, f"the target server timed out: {err}", kind="server_error")
    if isinstance(err, EndpointError):
        return HTTPError(502, f"the target server failed: {err}", kind="server_error")
    if isinstance(err, (ValueError, TypeError)):
        return HTTPError(400, str(err), param=fmt.param_named(str(err)))
    log.error("request failed", exc_info=(type(err), err, err.__traceback__))
    return HTTPError(500, "internal error (logged by the server)", kind="server_error")

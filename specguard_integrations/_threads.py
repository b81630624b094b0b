"""Run the blocking engine loop off the event loop, records delivered as an async iterator."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .cancellation import CURRENT, Scope

if TYPE_CHECKING:
    from .engine.loop import StepStream
    from .types import StepRecord


def stream_in_thread(stream: StepStream) -> AsyncIterator[StepRecord]:
    """Consume an engine stream on a worker thread, yielding records on the event loop.

    The worker runs in a cancellation scope: when the consumer stops (its task cancelled, e.g.
    by `asyncio.wait_for`), a request in flight to a remote model is abandoned at once and its
    socket shut, so the consumer does not wait for the server."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()
    ctx = contextvars.copy_context()
    scope = Scope()
    ctx.run(CURRENT.set, scope)

    def work() -> None:
        try:
            for rec in stream:
                if cancelled.is_set():
                    stream.close()
                    return
                loop.call_soon_threadsafe(queue.put_nowait, ("step", rec))
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))
        except BaseException as err:  # surfaced on the event loop
            loop.call_soon_threadsafe(queue.put_nowait, ("error", err))

    async def agen() -> AsyncIterator[StepRecord]:
        fut = loop.run_in_executor(None, ctx.run, work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "step":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    break
        finally:
            cancelled.set()
            scope.cancel()
            await fut

    return agen()

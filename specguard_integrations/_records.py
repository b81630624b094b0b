"""The records of one framework call as they run: one engine run, started again when its server
could not be reached before its first step (`max_retries`), sync or async (the engine on a worker
thread). Every adapter's calls go through here (`_adapter.SpecGuardParams.start_call`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine.loop import StepStream
    from .types import GenerationResult, StepRecord


class _Attempt:
    """One try of a call: a server that could not be reached before the first step is tried
    again while tries are left; any other error, or one after a step was sent, stands."""

    def __init__(self, last: bool) -> None:
        self.last, self.seen = last, False

    def __enter__(self) -> _Attempt:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: Any
    ) -> bool:
        from .errors import EndpointUnreachable

        # not `DeadlinePassed`: the generation's own timeout is not a server to try again
        return isinstance(err, EndpointUnreachable) and not self.seen and not self.last


def _attempts(retries: int) -> list[_Attempt]:
    return [_Attempt(i == retries) for i in range(retries + 1)]


class Records:
    """The records of one call, as it runs: a call whose server could not be reached before its
    first step is started again, `retries` times at most (streams included); any other error,
    or one after a step was yielded, stands. `result` is set once the records are exhausted."""

    def __init__(self, start: Callable[[], StepStream], retries: int = 0) -> None:
        self.start, self.retries = start, retries
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[StepRecord]:
        for attempt in _attempts(self.retries):
            with attempt:
                stream = self.start()
                try:
                    for record in stream:
                        attempt.seen = True
                        yield record
                finally:
                    stream.close()
                self.result = stream.result
                return
        raise AssertionError("the last attempt raises")

    async def __aiter__(self) -> AsyncIterator[StepRecord]:
        """The same, with the engine on a worker thread (`_threads.stream_in_thread`)."""
        from ._threads import stream_in_thread

        for attempt in _attempts(self.retries):
            with attempt:
                stream = self.start()
                async for record in stream_in_thread(stream):
                    attempt.seen = True
                    yield record
                self.result = stream.result
                return
        raise AssertionError("the last attempt raises")

    def final(self) -> GenerationResult:
        assert self.result is not None, "the records are not exhausted"
        return self.result


def run_call(
    records: Records, on_step: Callable[[StepRecord], None] | None = None
) -> GenerationResult:
    """Run a call to its end, handing each record to `on_step`."""
    for record in records:
        if on_step is not None:
            on_step(record)
    return records.final()


async def arun_call(
    records: Records, on_step: Callable[[StepRecord], Awaitable[None] | None] | None = None
) -> GenerationResult:
    """`run_call` off the event loop: the engine runs on a worker thread."""
    import inspect

    async for record in records:
        done = on_step(record) if on_step is not None else None
        if inspect.isawaitable(done):
            await done
    return records.final()

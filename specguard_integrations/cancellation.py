"""Cancelling a call that waits on a server.

A `Scope` is set (as a context variable) around one call by whoever can cancel it: an async
adapter whose task was cancelled, the server when its client leaves. Blocking work inside it
(an HTTP request to a remote model) waits with `Scope.wait`, which returns as soon as the scope
is cancelled, and registers a hook that aborts what it waits on (the request's socket). Code
outside any scope waits as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from typing import TypeVar

from .errors import Cancelled

T = TypeVar("T")

POLL = 0.05  # seconds between looks at the scope while waiting


class Scope:
    """One cancellable call."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def cancel(self) -> None:
        """Cancel the call: run every hook once (each aborts something in flight)."""
        with self._lock:
            self.event.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            with contextlib.suppress(Exception):  # aborting is best effort
                hook()

    @contextlib.contextmanager
    def hook(self, abort: Callable[[], None]) -> Iterator[None]:
        """Run `abort` if the scope is cancelled while the block runs."""
        with self._lock:
            if self.event.is_set():
                raise Cancelled("the call was cancelled")
            self._hooks.append(abort)
        try:
            yield
        finally:
            with self._lock:
                if abort in self._hooks:
                    self._hooks.remove(abort)

    def wait(self, future: Future[T]) -> T:
        """The future's result, or `errors.Cancelled` as soon as the scope is cancelled (the work
        behind the future is left to end on its own deadline)."""
        while not future.done():
            wait([future], timeout=POLL)
            if not future.done() and self.event.is_set():
                raise Cancelled("the call was cancelled")
        return future.result()


CURRENT: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "specguard_cancel_scope", default=None
)


def current() -> Scope | None:
    """The scope of the running call, if one was set."""
    return CURRENT.get()


@contextlib.contextmanager
def scope(event: threading.Event | None = None) -> Iterator[Scope]:
    """A scope for the calls made inside the block; with `event`, the scope uses it (setting the
    event cancels the calls, but runs no hook: call `Scope.cancel` for that)."""
    s = Scope()
    if event is not None:
        s.event = event
    token = CURRENT.set(s)
    try:
        yield s
    finally:
        CURRENT.reset(token)

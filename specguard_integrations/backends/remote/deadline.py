"""One deadline over every phase of a request, the wait for the status line and headers too.

httpx bounds each socket operation (connect, each read, each write) by its own timeout, so a
server that sends ``103 Early Hints`` forever, or trickles its headers a byte at a time, never
trips one: each read returns something in time. Here the network streams of a client's pools
read the request's deadline (monotonic) before every operation: each one waits at most until
the deadline, and none starts after it (httpx then raises its own timeout, which the client
reports as `EndpointTimeout`). The deadline is set by the thread making the request
(`bounded`), so requests that share a pooled connection one after another each get their own.

Imported by the client when it makes its first request (httpcore is not imported before).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx

_UNTIL: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "specguard_http_deadline", default=None
)


@contextlib.contextmanager
def bounded(until: float) -> Iterator[None]:
    """Every socket operation in the block ends by `until` (monotonic seconds)."""
    token = _UNTIL.set(until)
    try:
        yield
    finally:
        _UNTIL.reset(token)


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` capped by the time left to the deadline; `error` when none is left."""
    until = _UNTIL.get()
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


def install(client: httpx.Client) -> int:
    """Bound the network streams of every pool `client` sends through (its own and the proxy
    mounts read from the environment); the number of pools bounded. httpx has no public hook
    for a pool's network backend: the pools' own attribute is wrapped."""
    count = 0
    for transport in [client._transport, *client._mounts.values()]:
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if isinstance(inner, _Backend):
            count += 1
        elif isinstance(inner, httpcore.NetworkBackend):
            pool._network_backend = _Backend(inner)  # type: ignore[union-attr]
            count += 1
    return count


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)

"""A small client for OpenAI-compatible servers: JSON requests with one retry and deadline policy,
bounded bodies and typed errors.

Shared by the endpoint backends; one client per backend keeps a connection pool, so concurrent
generations keep many requests in flight. The policy (docs/scale-out.md, "Failure semantics"):

- each request has a deadline, `timeout` seconds (or less, when the caller's own deadline is
  nearer): every socket operation (connect, the status line and headers, each piece of the
  body) waits at most until it (`deadline`), so a server that stalls in any phase (endless
  ``1xx`` answers, headers or a body trickled a byte at a time) is cut off there;
- refused or dropped connections, timeouts, 429 and 5xx are retried `max_retries` times with
  jittered exponential backoff, or after the server's ``Retry-After`` (capped);
- a body over `max_body_bytes` is refused before it is parsed; a redirect is not followed;
- no secret leaves in a message: the URL's userinfo, the API key and any bearer token are
  masked in every error and log record (`redaction`);
- a call inside a cancellation scope (`specguard_integrations.cancellation`) returns as soon as
  the scope is cancelled, and its socket is shut.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import math
import random
import re
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ...cancellation import Scope, current
from ...errors import (
    Cancelled,
    DeadlinePassed,
    EndpointError,
    EndpointRejected,
    EndpointReplyError,
    EndpointTimeout,
    EndpointUnreachable,
    InvalidInputError,
)
from .redaction import Redactor, guard_library_logs, redact_url, split_userinfo

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

RETRY_AFTER_CAP = 30.0  # seconds: the longest Retry-After honoured
MAX_BODY_BYTES = 16 << 20  # a reply larger than this is refused unread


class _Retryable(Exception):
    """An attempt that may be tried again; `retry_after` is the server's wish, in seconds."""

    def __init__(self, error: EndpointError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error, self.retry_after = error, retry_after


class OpenAICompatibleClient:
    """Requests JSON from an OpenAI-compatible server under the module's retry and deadline
    policy; any 4xx but 429 is the request's fault and raises at once with the server's
    message."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_connections: int = 64,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            shown = redact_url(base_url).rpartition("@")
            raise InvalidInputError(
                "base_url must start with http:// or https://, got"
                f" {(shown[0] and '***@') + shown[2]!r}"
            )
        if not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            raise InvalidInputError(
                f"timeout must be a finite number of seconds > 0, got {timeout!r}"
            )
        if not isinstance(max_body_bytes, int) or max_body_bytes < 1024:
            raise InvalidInputError(f"max_body_bytes must be at least 1024, got {max_body_bytes!r}")
        self.redact = Redactor(base_url, api_key)
        guard_library_logs(self.redact)
        # requests go to the URL without its userinfo, which travels as HTTP Basic auth: no
        # library ever sees (or logs) it in a URL
        self._url, self._userinfo = split_userinfo(base_url.rstrip("/"))
        self.base_url = redact_url(base_url.rstrip("/"))  # messages and logs name it so
        _check_url(self._url, self.base_url)
        if api_key is not None and not _header_safe(api_key):
            raise InvalidInputError(
                "api_key: a bearer token is printable ASCII (the key given is not; not shown)"
            )
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_connections = max_connections
        self.max_body_bytes = max_body_bytes
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the lazy client and pool are made once

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            return self._client or self._new_client()

    def _new_client(self) -> httpx.Client:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        user, _, password = self._userinfo.partition(":")
        auth = None
        if self._userinfo:
            auth = httpx.BasicAuth(urllib.parse.unquote(user), urllib.parse.unquote(password))
        self._client = httpx.Client(
            timeout=self.timeout,
            headers=headers,
            auth=auth,
            limits=httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
        )
        from . import deadline

        deadline.install(self._client)  # the deadline covers the wait for the headers too
        return self._client

    # ---------------------------------------------------------------- one request, retried
    def request(
        self, method: str, path: str, payload: dict[str, Any] | None, deadline: float | None
    ) -> tuple[int, bytes]:
        """(status, body) of a request retried under the policy; `deadline` (monotonic) bounds
        every attempt and the waits between them."""
        from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

        url = self.base_url + path  # as messages name it (no secret)

        def wait(state: RetryCallState) -> float:
            err = state.outcome.exception() if state.outcome else None
            backoff = min(4.0, 0.25 * 2 ** (state.attempt_number - 1)) * (0.5 + random.random())
            if isinstance(err, _Retryable) and err.retry_after is not None:
                backoff = min(err.retry_after, RETRY_AFTER_CAP)
            if deadline is not None:
                backoff = min(backoff, max(0.0, deadline - time.monotonic()))
            return backoff

        def log_retry(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            log.warning("%s %s: %s, attempt %d", method, url, err, state.attempt_number)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, method, path, payload, deadline)
        except _Retryable as last:
            raise _final(last.error, self.base_url, self.max_retries + 1) from None

    def _sleep(self, seconds: float) -> None:
        scope = current()
        if scope is not None and scope.event.wait(seconds):
            raise Cancelled("the call was cancelled")
        if scope is None:
            time.sleep(seconds)

    def _attempt(
        self, method: str, path: str, payload: dict[str, Any] | None, deadline: float | None
    ) -> tuple[int, bytes]:
        """One attempt: within its deadline, abandoned at once when the scope is cancelled."""
        url = self.base_url + path
        now = time.monotonic()
        limit = self.timeout if deadline is None else min(self.timeout, deadline - now)
        if limit <= 0:
            raise DeadlinePassed(f"{url}: the generation's deadline passed before the request")
        own = deadline is not None and deadline - now < self.timeout  # the generation's is nearer
        scope = current()
        try:
            if scope is None:
                return self._exchange(method, path, payload, now + limit, None)
            return self._in_scope(scope, method, path, payload, now + limit)
        except _Retryable as err:
            if own and isinstance(err.error, EndpointTimeout):
                raise DeadlinePassed(f"{err.error} (the generation's timeout)") from None
            raise

    def _in_scope(
        self, scope: Scope, method: str, path: str, payload: dict[str, Any] | None, until: float
    ) -> tuple[int, bytes]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_connections, "specguard-http")
            pool = self._pool
        job = pool.submit(self._exchange, method, path, payload, until, scope)
        return scope.wait(job)

    def _exchange(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        until: float,
        scope: Scope | None,
    ) -> tuple[int, bytes]:
        import httpx

        from .deadline import bounded

        url = self.base_url + path
        content = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"} if content is not None else {}
        left = max(until - time.monotonic(), 0.001)
        resp: httpx.Response | None = None
        try:
            req = self.client.build_request(
                method, self._url + path, content=content, headers=headers, timeout=left
            )
            with bounded(until):  # every socket operation, the headers' too, ends by `until`
                resp = self.client.send(req, stream=True)
                try:
                    body = self._read(resp, url, until, scope)
                finally:
                    resp.close()
        except httpx.TimeoutException as err:
            what = "its whole body" if resp is not None else "its status line and headers"
            late = EndpointTimeout(
                f"{url} did not answer within the deadline: {what} did not arrive in time"
                f" ({self._said(err)})"
            )
            raise _Retryable(late) from None
        except httpx.TransportError as err:  # refused, reset, DNS, a body cut off
            said = f"{type(err).__name__}: {self._said(err)}"
            raise _Retryable(EndpointUnreachable(f"{url}: {said}")) from None
        except httpx.HTTPError as err:  # a body the client cannot decode (Content-Encoding)
            raise EndpointReplyError(
                f"{url} answered a body that cannot be read: {self._said(err)}"
            ) from None
        status = resp.status_code
        if status == 429 or status >= 500:
            failed = EndpointUnreachable(f"{url} answered {status}: {self._message(body)}")
            raise _Retryable(failed, _retry_after(resp.headers.get("retry-after")))
        if 300 <= status < 400:  # never followed: a request is sent where it was aimed
            where = self.redact(resp.headers.get("location") or "nowhere named")
            raise EndpointReplyError(
                f"{url} answered {status}, a redirect to {where[:200]}: redirects are not"
                " followed; give the server's own address as base_url"
            )
        return status, body

    def _said(self, err: BaseException) -> str:
        """An HTTP library's error message, without secrets."""
        return self.redact(str(err))

    def _message(self, body: bytes) -> str:
        """The server's error message, its secrets masked first, then cut short."""
        return self.redact(_message(body))[:500]

    def _read(self, resp: httpx.Response, url: str, until: float, scope: Scope | None) -> bytes:
        """The body, within the size cap and the deadline (a trickling server is cut off)."""
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise EndpointReplyError(
                f"{url} answered {int(declared)} bytes, over the {self.max_body_bytes}-byte cap"
            )
        sock = (resp.extensions.get("network_stream") or _NoStream()).get_extra_info("socket")
        chunks, size = [], 0
        with scope.hook(lambda: _shut(sock)) if scope is not None else contextlib.nullcontext():
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise EndpointReplyError(
                        f"{url} answered more than {self.max_body_bytes} bytes (the size cap)"
                    )
                if time.monotonic() > until:
                    raise _Retryable(
                        EndpointTimeout(f"{url} did not send its whole body within the deadline")
                    )
                chunks.append(chunk)
        return b"".join(chunks)

    # ---------------------------------------------------------------- JSON
    def post(
        self, path: str, payload: dict[str, Any], deadline: float | None = None
    ) -> dict[str, Any]:
        """A POST's JSON object; a typed `EndpointError` naming the problem otherwise."""
        status, body = self.request("POST", path, payload, deadline)
        url = self.base_url + path
        if status >= 400:
            raise EndpointRejected(f"{url} answered {status}: {self._message(body)}", status)
        data = _json(body, url)
        if not isinstance(data, dict):
            raise EndpointReplyError(
                f"{url} answered malformed data: a JSON object was expected, got"
                f" {type(data).__name__}"
            )
        if data.get("object") == "error" or ("error" in data and "choices" not in data):
            # vLLM's error object, or OpenAI's error shape, under a 2xx status
            raise EndpointReplyError(
                f"{url} answered an error with status {status}: {self._message(body)}"
            )
        return data

    def get(self, path: str, deadline: float | None = None) -> Any:
        """A GET's JSON body, or None when the route answers an error or no JSON (a probe);
        ended by `deadline` (monotonic seconds) as any request."""
        try:
            status, body = self.request("GET", path, None, deadline)
        except (EndpointUnreachable, DeadlinePassed):  # the caller's deadline ends a probe too
            raise
        except EndpointError:
            return None
        if status >= 300:
            return None
        try:
            return _json(body, self.base_url + path)
        except EndpointReplyError:
            return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


class _NoStream:
    def get_extra_info(self, name: str) -> None:
        return None


def _shut(sock: Any) -> None:
    """Wake a read blocked on `sock` (closing alone does not)."""
    import socket

    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def _final(error: EndpointError, base_url: str, attempts: int) -> EndpointError:
    """The error of the last attempt, saying how many were made."""
    kind = type(error)
    if kind is EndpointUnreachable and "answered" not in str(error):
        return EndpointUnreachable(
            f"cannot reach the server at {base_url} after {attempts} attempts: {error}"
        )
    return kind(f"{error} (after {attempts} attempts)")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), if valid."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):  # neither seconds nor a date: ignored
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _json(body: bytes, url: str) -> Any:
    """Parsed JSON: strict (NaN and Infinity are not JSON numbers), else `EndpointReplyError`."""

    def refuse(name: str) -> Any:
        raise InvalidInputError(f"{name} is not a JSON number")

    try:
        data = json.loads(body, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise EndpointReplyError(f"{url} answered malformed data (not JSON): {err}") from None
    where = _lone_surrogate(data) if _ESCAPED_SURROGATE.search(body) else None
    if where is not None:  # only an escape writes one, and no tokenizer can encode it
        raise EndpointReplyError(
            f"{url} answered malformed data: {where} is not valid Unicode (a lone surrogate)"
        )
    return data


def _lone_surrogate(data: Any) -> str | None:
    """Where in parsed JSON a string (a value or a key) holds a lone surrogate, or None."""
    stack: list[tuple[str, Any]] = [("the reply", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(value, dict):
            stack.extend((f"{path} key {k!r}", k) for k in value)
            stack.extend((f"{path}[{k!r}]", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


# a \uD800-\uDFFF escape: JSON text can carry a lone surrogate, which no tokenizer encodes
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _message(body: bytes) -> str:
    """The server's error message (bounded; the caller masks secrets before cutting it)."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        return str(err.get("message", err) if isinstance(err, dict) else err)[:8192]
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body[:8192].decode("utf-8", "replace")


def _check_url(url: str, shown: str) -> None:
    """`InvalidInputError` naming the (redacted) URL when an HTTP client cannot parse it."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise InvalidInputError(f"base_url {shown!r} is not a URL an HTTP client can use") from None
    if not parsed.host:
        raise InvalidInputError(f"base_url {shown!r} names no host")


def _header_safe(value: str) -> bool:
    return isinstance(value, str) and all(32 <= ord(c) < 127 for c in value)

"""A small client for OpenAI-compatible servers: JSON POSTs with timeouts and bounded retries.

Shared by the endpoint backends; one client per backend keeps a connection pool, so concurrent
generations keep many requests in flight.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The server answered an error, or data that is not an OpenAI-compatible completion."""


class EndpointUnreachable(EndpointError):
    """No answer from the server after the bounded retries (refused, timed out, DNS)."""


class OpenAICompatibleClient:
    """POSTs JSON to an OpenAI-compatible server with timeouts and bounded retries.

    Retries (with jittered exponential backoff) cover connection failures, timeouts, 429 and 5xx;
    any other 4xx is the request's fault and raises at once with the server's message.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_connections: int = 64,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_connections = max_connections
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(
                timeout=self.timeout,
                headers=headers,
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
            )
        return self._client

    def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> httpx.Response:
        """The response of a request retried on connection errors, 429 and 5xx."""
        import httpx

        url = self.base_url + path
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(4.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random()))
            try:
                resp = self.client.request(method, url, json=payload)
            except httpx.TransportError as err:  # refused, reset, timeout, DNS
                last = err
                log.warning("request to %s failed (%s), attempt %d", url, err, attempt + 1)
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = EndpointError(f"{url} answered {resp.status_code}: {_message(resp)}")
                log.warning("%s, attempt %d", last, attempt + 1)
                continue
            return resp
        if isinstance(last, EndpointError):
            raise EndpointError(f"{last} (after {self.max_retries + 1} attempts)")
        raise EndpointUnreachable(
            f"cannot reach the server at {self.base_url} after {self.max_retries + 1} attempts:"
            f" {last}"
        )

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A POST's JSON object; `EndpointError` naming the problem otherwise."""
        resp = self._send("POST", path, payload)
        url = self.base_url + path
        if resp.status_code >= 400:
            raise EndpointError(f"{url} answered {resp.status_code}: {_message(resp)}")
        try:
            data = resp.json()
        except ValueError as err:
            raise EndpointError(f"{url} answered malformed data (not JSON): {err}") from err
        if not isinstance(data, dict):
            raise EndpointError(f"{url} answered malformed data: a JSON object was expected")
        return data

    def get(self, path: str) -> Any:
        """A GET's JSON body, or None when the route answers an error or no JSON (a probe)."""
        try:
            resp = self._send("GET", path, None)
        except EndpointUnreachable:
            raise
        except EndpointError:
            return None
        if resp.status_code >= 400:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        return str(err.get("message", err) if isinstance(err, dict) else err)[:500]
    except ValueError:
        return resp.text[:500]

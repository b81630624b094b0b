"""A scripted OpenAI-compatible engine on loopback (vLLM's shape) that can be switched into a
failure mode, for the fault-injection tier.

It speaks HTTP/1.1 by hand over a socket so that it can fail the ways real engines and networks
do: refuse, die after N requests, answer 5xx or 429 with ``Retry-After``, hang before its
headers, send ``103 Early Hints`` forever or trickle its headers, trickle its body, cut its body
off, redirect, answer malformed JSON or the wrong shapes, answer far more tokens than asked, stop
at a step boundary with an empty step, or end a step with any ``finish_reason``. Every request
loop is bounded and the server stops by itself when the test ends.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# what the scripted model writes, step by step: the steps and the final line
STEPS = ["Tom has 3 apples.", "He buys 4 more, so 3 + 4 = 7.", "Answer: 7"]
ANSWER = "\n\n".join(STEPS) + "\n"
MODEL = "scripted-target"
PROMPT = "Question: Tom has 3 apples and buys 4 more. How many?\n"


def _config():  # type: ignore[no-untyped-def]
    from specguard_integrations import SpecGuardConfig

    # the draft is never accepted (tau > 1): every step is the target's
    return SpecGuardConfig(k=1, temperature=0.0, tau=1.5, max_step_tokens=64, max_steps=12, seed=0)


CFG = _config()


@dataclass
class Fault:
    """A failure mode; `times` requests get it (None: every request), then the engine heals."""

    mode: str = "ok"
    times: int | None = None
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0  # hang / trickle delay
    shape: Any = None  # malformed: the body to send (bytes, or an object to send as JSON)
    tokens: int = 0  # overlong: tokens in the reply
    after: int = 0  # dies: requests answered before it dies
    message: str | None = None  # status: the error message (default "scripted <status>")
    finish: str = "stop"  # finish: the finish_reason a step ends with (half a step written)
    skip: int = 0  # requests answered well before the fault starts
    probes: bool = False  # the engine's identity (GET /v1/models, ...) gets the fault too


@dataclass
class Log:
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: int = 0


def continuation(prompt: str) -> str:
    """What the scripted model writes after `prompt`: the rest of ANSWER from where the prompt
    stands in it (the prompt ends with the question and any steps so far)."""
    for i in range(len(ANSWER), -1, -1):
        if prompt.endswith(ANSWER[:i]):
            return ANSWER[i:]
    return ANSWER


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """A vLLM completions answer: the text up to the first stop string asked (kept, with
    ``stop_reason``), at most ``max_tokens`` "tokens" (a character each), EOS at the end."""
    rest = continuation(str(body.get("prompt", "")))
    stops = [s for s in body.get("stop") or [] if s]
    limit = int(body.get("max_tokens") or 16)
    hits = [(rest.find(s), s) for s in stops if rest.find(s) >= 0]
    text, finish, reason = rest, "stop", None
    if hits:
        at, s = min(hits)
        text, reason = rest[: at + len(s)], s
    if len(text) > limit:
        text, finish, reason = text[:limit], "length", None
    n = int(body.get("n") or 1)
    choices = []
    for i in range(n):
        choice: dict[str, Any] = {
            "index": i,
            "text": text,
            "finish_reason": finish,
            "stop_reason": reason,
        }
        if body.get("logprobs"):  # a character per token, each fairly sure
            choice["logprobs"] = {
                "tokens": list(text),
                "token_logprobs": [-0.05] * len(text),
                "text_offset": list(range(len(text))),
            }
        choices.append(choice)
    usage = {"prompt_tokens": len(body.get("prompt", "")), "completion_tokens": n * len(text)}
    return {"id": "cmpl", "object": "text_completion", "choices": choices, "usage": usage}


class FaultyEngine:
    """The engine; `fault` is switched by the test (thread-safe enough for one test at a time)."""

    def __init__(self) -> None:
        self.fault = Fault()
        self.log = Log()
        self._lock = threading.Lock()
        engine = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                engine._handle(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, **kw: Any) -> FaultyEngine:
        with self._lock:
            self.fault = Fault(**kw)
            self.log = Log()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- one connection
    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            while self._one(conn):  # keep-alive: requests on one connection
                pass
        except OSError:
            pass

    def _one(self, conn: socket.socket) -> bool:
        head, body = _read_request(conn)
        if head is None:
            return False
        method, path = head.split(" ")[:2]
        data = json.loads(body) if body else {}
        if method == "GET":  # the engine's identity: /v1/models as vLLM answers it
            fault = self.fault
            if fault.probes and fault.mode in ("early_hints", "trickle_headers", "hang"):
                if fault.mode == "hang":
                    time.sleep(fault.seconds)
                    return False
                return _stall_headers(conn, fault.mode, fault.seconds)
            _send(conn, 200, {"object": "list", "data": [{"id": MODEL, "owned_by": "vllm"}]})
            return True
        with self._lock:
            fault = self.fault
            self.log.requests.append({"method": method, "path": path, **data})
            n = len(self.log.requests)
            active = fault.mode != "ok" and n > fault.skip
            active = active and (fault.times is None or self.log.faults < fault.times)
            if active:
                self.log.faults += 1
        if active:
            return self._fail(conn, fault, data, n)
        _send(conn, 200, completion(data))
        return True

    def _fail(self, conn: socket.socket, f: Fault, data: dict[str, Any], n: int) -> bool:
        mode = f.mode
        if mode == "dies":
            if n > f.after:
                self.server.shutdown()  # no more connections are served
                return False
            _send(conn, 200, completion(data))
            return True
        if mode == "status":
            extra = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
            message = f.message or f"scripted {f.status}"
            _send(conn, f.status, {"error": {"message": message}}, extra)
            return True
        if mode == "redirect":
            _send(conn, f.status, {}, {"Location": f.message or "http://elsewhere/v1"})
            return True
        if mode in ("early_hints", "trickle_headers"):
            return _stall_headers(conn, mode, f.seconds)
        if mode == "finish":  # half of the step's text, then the engine's own end reason
            answer = completion(data)
            text = answer["choices"][0]["text"]
            answer["choices"][0].update(
                text=text[: max(1, len(text) // 2)], finish_reason=f.finish, stop_reason=None
            )
            _send(conn, 200, answer)
            return True
        if mode == "hang":
            time.sleep(f.seconds)
            return False
        if mode == "trickle":
            raw = json.dumps(completion(data)).encode()
            conn.sendall(_head(200, len(raw)))
            for i in range(len(raw)):
                conn.sendall(raw[i : i + 1])
                time.sleep(f.seconds)
            return True
        if mode == "cut":
            raw = json.dumps(completion(data)).encode()
            conn.sendall(_head(200, len(raw)) + raw[: len(raw) // 3])
            return False
        if mode == "malformed":
            raw = f.shape if isinstance(f.shape, bytes) else json.dumps(f.shape).encode()
            conn.sendall(_head(200, len(raw)) + raw)
            return True
        if mode == "overlong":
            answer = completion(data)
            answer["choices"][0].update(text="ab " * f.tokens, finish_reason="length")
            answer["usage"]["completion_tokens"] = f.tokens
            _send(conn, 200, answer)
            return True
        if mode == "empty_boundary":  # a step that is only the boundary, stopped at it
            answer = completion(data)
            answer["choices"][0].update(text="\n\n", finish_reason="stop", stop_reason="\n\n")
            answer["usage"]["completion_tokens"] = 1
            _send(conn, 200, answer)
            return True
        if mode == "zero_length":  # nothing written, cut for length
            answer = completion(data)
            answer["choices"][0].update(text="", finish_reason="length", stop_reason=None)
            answer["usage"]["completion_tokens"] = 0
            _send(conn, 200, answer)
            return True
        raise ValueError(f"unknown fault mode {mode!r}")


def _stall_headers(conn: socket.socket, mode: str, seconds: float) -> bool:
    """Never finish the headers, for at most 60 s: an endless stream of ``103 Early Hints``
    answers, or a status line and then a header trickled one byte every `seconds`."""
    end = time.monotonic() + 60
    if mode == "trickle_headers":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: ")
    while time.monotonic() < end:
        if mode == "early_hints":
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        else:
            conn.sendall(b"a")
        time.sleep(seconds)
    return False


def _read_request(conn: socket.socket) -> tuple[str | None, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
        if len(buf) > 1 << 20:
            return None, b""
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return lines[0], rest[:length]


_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


def _head(status: int, length: int, extra: dict[str, str] | None = None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _send(conn: socket.socket, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
    raw = json.dumps(obj).encode()
    conn.sendall(_head(status, len(raw), extra) + raw)

"""Every malformed request gets a 4xx that names the field, and the server then serves a good
request as before; the server's exposure and liveness limits hold. In-process (the ASGI app over
the bundled pair), with a real uvicorn where timing on the wire matters."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from starlette.testclient import TestClient

from specguard_integrations.registry import load_pair
from specguard_integrations.server import Limits, create_app
from specguard_integrations.server.served import GenOutput, ServedModel, SpecGuardServed

BASE = {
    "model": "specguard",
    "messages": [{"role": "user", "content": "Question: What is 3 + 4?\n"}],
}
TOOL = {
    "type": "function",
    "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {}}}},
}


@pytest.fixture(scope="module")
def served():
    engine = load_pair(None, None, device="cpu")
    return SpecGuardServed(engine, engine.config)


_FIRST: dict = {}


@pytest.fixture(scope="module")
def client(served):
    c = TestClient(create_app(served))
    _FIRST["message"] = post(c, BASE).json()["choices"][0]["message"]  # before any bad request
    return c


def post(client, body, path="/v1/chat/completions", **headers):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    hdrs = {"content-type": "application/json", **headers}
    return client.post(path, content=raw, headers=hdrs)


def good(client):
    """A good request answered in full after a bad one, exactly as the first time (greedy)."""
    r = post(client, BASE)
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message == _FIRST["message"]
    return r.json()


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"foo": "bar"}]}, "tools[0].type"),
        ({"messages": [{"role": "assistant", "tool_calls": "x"}]}, "messages[0].tool_calls"),
        ({"stream": "yes"}, "stream"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
            "tools[0].function.parameters",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
                ]
            },
            "tools[0].function.parameters",
        ),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content",
        ),
        ({"messages": [{"role": "user", "content": "a\ud800b"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0]"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "content": "3", "tool_call_id": "c9"},
                ]
            },
            "messages[1]",
        ),
        ({"n": True}, "n"),
        ({"max_tokens": "12"}, "max_tokens"),
        ({"temperature": float("1e400")}, "temperature"),
        ({"stop": ["ok", 5]}, "stop"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"12": 3}}, "logit_bias"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice"),
        ({"stream_options": {"include_usage": True}}, None),
        ({"frobnicate": 1}, "frobnicate"),
        ({"model": 7}, "model"),
    ],
)
def test_malformed_chat_requests_name_the_field(client, change, param):
    r = post(client, {**BASE, **change})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] is None
    assert err["message"] and "Traceback" not in err["message"]
    if param is not None:
        assert err["param"] is not None and err["param"].startswith(param), err
    good(client)


def test_body_limits_and_content_type(client):
    r = post(client, json.dumps(BASE), **{"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    r = post(client, b"[" * 100_000 + b"]" * 100_000)
    assert r.status_code == 400 and "nested deeper" in r.json()["error"]["message"]
    deep = {**BASE, "metadata": json.loads("[" * 70 + "]" * 70)}
    assert post(client, deep).status_code == 400
    assert post(client, b"{not json").status_code == 400
    assert post(client, b"[1, 2]").status_code == 400
    assert post(client, "\udcff".encode("utf-8", "surrogateescape")).status_code == 400
    good(client)


def test_response_format_is_honoured(client):
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    for fmt, valid in (
        ({"type": "json_object"}, {"type": "object"}),
        ({"type": "json_schema", "json_schema": {"name": "result", "schema": schema}}, schema),
        (
            {"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}},
            schema,
        ),
    ):
        r = post(client, {**BASE, "response_format": fmt})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        jsonschema.validate(json.loads(choice["message"]["content"]), valid)
        assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    both = post(client, {**BASE, "tools": [TOOL], "response_format": {"type": "json_object"}})
    assert both.status_code == 400


def test_lone_surrogates_and_file_paths_get_clear_errors_in_python(served, tmp_path):
    from specguard_integrations.backends.local.model import LocalCausalLM

    engine = served.engine
    with pytest.raises(ValueError, match=r"prompt cannot be encoded as UTF-8: character 3"):
        engine.generate("abc\ud800")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x80not a checkpoint")
    for path in (weights, tmp_path / "missing"):
        with pytest.raises(ValueError, match=f"cannot load causal LM from '{path}'") as err:
            LocalCausalLM.from_pretrained(str(path), device="cpu")
        assert "weights_only" not in str(err.value)


def test_config_refuses_infinite_bounds_and_bool_counts():
    from specguard_integrations import ConfigError, SpecGuardConfig

    for bad in (
        {"confidence_bounds": (float("-inf"), 0.0)},
        {"tau": float("nan")},
        {"k": True},
        {"max_new_tokens": 10.0},
        {"temperature": True},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SpecGuardConfig(**bad)


# ------------------------------------------------------------------ a server on the wire
class Slow(ServedModel):
    """A served model that takes its time, and says whether it was stopped between steps."""

    name = "slow"
    max_n = 1

    def __init__(self, lm):
        self.lm = lm
        self.cancelled = threading.Event()
        self.started = threading.Event()
        self.steps = 0

    def check_prompt(self, prompt, add_special_tokens):
        self.tokenised_on = threading.current_thread().name

    def generate(self, req, on_delta, cancelled):
        from specguard_integrations.errors import Cancelled
        from specguard_integrations.server.served import Choice

        self.started.set()
        for _ in range(200):  # 10 s if nobody stops it
            if cancelled.is_set():
                self.cancelled.set()
                raise Cancelled("generation cancelled")
            self.steps += 1
            on_delta("x", None)
            time.sleep(0.05)
        return GenOutput([Choice("x" * 200, "length")], 1)


class Failing(Slow):
    name = "failing"

    def generate(self, req, on_delta, cancelled):
        raise RuntimeError("secret internal detail at 0xdeadbeef")


@pytest.fixture
def wire(served):
    """Run a served model under uvicorn in a thread: (url, served, stop)."""
    import uvicorn

    servers = []

    def start(model, **limits):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = create_app(model, Limits(**limits))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(url + "/health", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        servers.append((server, thread))
        return url

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_a_client_that_leaves_stops_its_non_streaming_generation(served, wire):
    slow = Slow(served.lm)
    url = wire(slow)
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", json=body, timeout=0.6)
    assert slow.cancelled.wait(5), "generation went on after the client left"
    assert slow.steps < 100
    assert slow.tokenised_on != threading.main_thread().name  # CPU work off the event loop


def test_a_slow_body_times_out(served, wire):
    url = wire(Slow(served.lm), body_timeout=0.5)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        sock.settimeout(5)
        reply = b""
        for _ in range(8):  # a byte every 0.2 s keeps the connection busy
            try:
                sock.sendall(b" ")
            except OSError:
                break
            time.sleep(0.2)
            try:
                reply += sock.recv(4096)
            except (BlockingIOError, TimeoutError):
                continue
            if reply:
                break
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]


def test_an_api_key_guards_the_v1_routes(served, wire):
    url = wire(Slow(served.lm), api_key="s3cret")
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    assert httpx.get(url + "/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
        r = httpx.post(url + "/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "/v1/models", headers=headers).status_code == 401
    ok = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "slow"


def test_an_internal_error_is_a_generic_500(served, wire):
    url = wire(Failing(served.lm))
    body = {"model": "failing", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(url + "/v1/chat/completions", json=body)
    assert r.status_code == 500
    assert "secret" not in r.text and "RuntimeError" not in r.text
    assert r.json()["error"]["type"] == "server_error"


def test_concurrent_requests_share_grouped_forwards_and_answer_as_alone(served, wire):
    """The default server runs 16 generations at once; their model calls are grouped by the
    step scheduler, and every greedy answer is the one the request gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    from specguard_integrations.tasks import make_split

    url = wire(served)  # default limits: 16 workers
    prompts = [it.prompt for f in ("arithmetic", "multihop") for it in make_split(f, "test", 6)]

    def ask(prompt, stream=False):
        body = {"model": "specguard", "prompt": prompt, "max_tokens": 120, "stream": stream}
        r = httpx.post(url + "/v1/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        if not stream:
            return r.json()["choices"][0]["text"]
        chunks = [json.loads(x[6:]) for x in r.text.splitlines() if x[6:].startswith("{")]
        return "".join(c["choices"][0]["text"] for c in chunks if c["choices"])

    alone = [ask(p) for p in prompts]
    batcher = served.engine.draft.lm.runner
    batcher.largest = 0
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, prompts, [i % 2 == 1 for i in range(len(prompts))]))
    assert together == alone
    assert batcher.largest >= 2


def test_default_workers_follow_where_the_models_run(served):
    from specguard_integrations import SpecGuard
    from specguard_integrations.backends.remote.endpoint import EndpointTarget

    assert served.default_workers() == 1  # both models local, on the CPU
    remote = SpecGuard(served.engine.draft, EndpointTarget("http://127.0.0.1:9", "t"))
    assert SpecGuardServed(remote, served.config).default_workers() == 16


def test_serve_flags_declare_the_remote_targets_engine():
    from specguard_integrations.cli.main import _build_parser
    from specguard_integrations.server.run import served_from_args

    p = _build_parser()
    base = ["serve", "--device", "cpu", "--target-endpoint", "http://127.0.0.1:9"]
    args = p.parse_args([*base, "--target-model", "t", "--target-engine", "llamacpp"])
    served = served_from_args(args)
    assert served.engine.target.profile.name == "llamacpp"  # declared: the server is not asked
    assert served.default_workers() == 16  # a remote model: generations overlap its waits
    with pytest.raises(SystemExit):
        p.parse_args([*base, "--target-model", "t", "--target-engine", "vllm2"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("workers", 0, r"workers \(--workers\) must be >= 1, got 0"),
        ("max_queue", -1, r"max_queue \(--max-queue\) must be >= 0, got -1"),
        ("body_timeout", 0.0, r"body_timeout \(--body-timeout\) must be > 0, got 0.0"),
    ],
)
def test_limits_name_the_flag_that_is_wrong(field, value, message):
    with pytest.raises(ValueError, match=message):
        Limits(**{field: value})

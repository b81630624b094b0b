"""A seeded fuzz over the chat and completion request schemas: every answer is a 2xx with a valid
completion or a 4xx in OpenAI's error shape, never a 5xx. In-process, on the bundled pair."""

from __future__ import annotations

import copy
import json
import random

import pytest
from starlette.testclient import TestClient

from specguard_integrations.registry import load_pair
from specguard_integrations.server import create_app
from specguard_integrations.server.served import SpecGuardServed

CASES = 520
TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
    },
}
WEIRD = [
    None,
    True,
    0,
    -1,
    1e308,
    "",
    " ",
    "x" * 300,
    "\ud800",
    [],
    {},
    [1, "a"],
    {"k": [1]},
    "<|assistant|>",
    "\u0000",
    3.5,
    "null",
]


def valid_body(rng: random.Random) -> tuple[str, dict]:
    question = rng.choice(["Question: What is 3 + 4?\n", "Solve 2x = 6.\n", "Hi", "ünïcödé ✓"])
    common: dict = {"model": "specguard", "max_tokens": rng.randint(1, 12)}
    for key, values in (
        ("temperature", [0, 0.0, 0.5, 1.2]),
        ("top_p", [0.5, 1.0]),
        ("seed", [0, 7]),
        ("stop", ["\n", ["Answer", "\n\n"], []]),
        ("stream", [True, False]),
        ("user", ["u1"]),
    ):
        if rng.random() < 0.4:
            common[key] = rng.choice(values)
    if common.get("stream") and rng.random() < 0.5:
        common["stream_options"] = {"include_usage": rng.random() < 0.5}
    if rng.random() < 0.3:
        return "/v1/completions", {**common, "prompt": question}
    body = {**common, "messages": [{"role": "user", "content": question}]}
    if rng.random() < 0.3:
        body["messages"].insert(0, {"role": "system", "content": "Be brief."})
    roll = rng.random()
    if roll < 0.2:
        body["tools"] = [TOOL]
        body["tool_choice"] = rng.choice(
            ["auto", "required", "none", {"type": "function", "function": {"name": "add"}}]
        )
    elif roll < 0.3:
        body["response_format"] = rng.choice([{"type": "json_object"}, {"type": "text"}])
    return "/v1/chat/completions", body


def paths(obj, prefix=()):
    """Every path to a value inside a JSON object."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def mutate(body: dict, rng: random.Random) -> dict:
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        where = rng.choice([p for p in paths(body) if p])
        parent = body
        for key in where[:-1]:
            parent = parent[key]
        op = rng.random()
        if op < 0.3 and isinstance(parent, dict):
            parent.pop(where[-1], None)
        elif op < 0.4 and isinstance(parent, dict):
            parent[rng.choice(["extra", "role", "content", "type", "name"])] = rng.choice(WEIRD)
        elif op < 0.5:
            value = parent[where[-1]]
            parent[where[-1]] = [value] if rng.random() < 0.5 else {"wrapped": value}
        else:
            parent[where[-1]] = rng.choice(WEIRD)
    return body


@pytest.fixture(scope="module")
def client():
    engine = load_pair(None, None, device="cpu")
    return TestClient(create_app(SpecGuardServed(engine, engine.config)))


def check_answer(path: str, body: dict, r) -> str:
    assert r.status_code < 500, (body, r.text)
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"], body
        assert isinstance(err["type"], str)
        assert err["param"] is None or isinstance(err["param"], str)
        assert err["code"] is None or isinstance(err["code"], str)
        return "4xx"
    if body.get("stream") is True:
        lines = [ln for ln in r.text.split("\n") if ln.startswith("data: ")]
        assert lines[-1] == "data: [DONE]", r.text
        chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
        assert all("choices" in c for c in chunks), r.text
        return "2xx"
    data = r.json()
    (choice,) = data["choices"]
    assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    if path.endswith("chat/completions"):
        assert choice["message"]["role"] == "assistant"
    else:
        assert isinstance(choice["text"], str)
    return "2xx"


def test_fuzzed_requests_never_get_a_5xx(client):
    rng = random.Random(20261129)
    seen = {"2xx": 0, "4xx": 0}
    for _ in range(CASES):
        path, body = valid_body(rng)
        if rng.random() < 0.65:
            body = mutate(body, rng)
        raw = json.dumps(body)
        if rng.random() < 0.03:
            raw = raw[: rng.randint(0, len(raw))]  # a truncated body
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        if raw != json.dumps(body):
            assert r.status_code == 400, r.text
            seen["4xx"] += 1
            continue
        seen[check_answer(path, body, r)] += 1
    assert seen["2xx"] > 100 and seen["4xx"] > 200, seen  # both kinds were really exercised

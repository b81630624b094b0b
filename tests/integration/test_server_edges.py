"""The server's remote edge: ``GET /v1/models/{id}`` through the official `openai` SDK, request
bodies with a Content-Encoding (gzip and deflate read within the body limit, a zip bomb refused,
other encodings named), and completion prompts checked like chat messages."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import httpx
import openai
import pytest
from starlette.testclient import TestClient

# the loopback uvicorn fixture of the boundary tests (it asks for a `served` fixture: ours)
from test_server_boundaries import wire  # noqa: F401

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.server import create_app
from specguard_integrations.server.served import SpecGuardServed
from specguard_integrations.server.state import HTTPError
from specguard_integrations.testing import tiny_lm

NAME = "org/tiny-pair"  # a served name with a slash, as hub ids have
LIMIT = 1_000_000  # Limits.max_body_bytes by default
BODY = {"model": NAME, "prompt": "hello", "max_tokens": 4, "temperature": 0.0}


@pytest.fixture(scope="module")
def served():
    engine = SpecGuard(
        tiny_lm("llama", seed=1),
        tiny_lm("llama", seed=2),
        SpecGuardConfig(k=2, tau=0.745, max_step_tokens=3, max_new_tokens=8, seed=3),
    )
    return SpecGuardServed(engine, engine.config, name=NAME)


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served))


def post(client, raw: bytes, path: str = "/v1/completions", **headers: str) -> httpx.Response:
    return client.post(path, content=raw, headers={"content-type": "application/json", **headers})


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


# ------------------------------------------------------------------ GET /v1/models/{id}
def test_openai_sdk_retrieves_the_served_model(served, wire):  # noqa: F811
    url = wire(served)
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    listed = sdk.models.list().data[0]
    model = sdk.models.retrieve(NAME)
    assert model.id == NAME and model.object == "model" and model.owned_by == "specguard"
    assert model.model_dump() == listed.model_dump()
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("gpt-4o")
    assert caught.value.status_code == 404
    body = httpx.get(url + "/v1/models/gpt-4o").json()
    assert body == {
        "error": {
            "message": f"model 'gpt-4o' is not served here (served: {NAME!r})",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert caught.value.body == body["error"]


def test_model_route_is_guarded_by_the_api_key(served, wire):  # noqa: F811
    url = wire(served, api_key="s3cret")
    r = httpx.get(f"{url}/v1/models/{NAME}")
    assert _error(r, 401)["code"] == "invalid_api_key"
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
    assert sdk.models.retrieve(NAME).id == NAME


# ------------------------------------------------------------------ Content-Encoding
def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as HTTP defines deflate
        ("deflate", _raw_deflate),  # what some clients send
        ("identity", lambda b: b),
    ],
)
def test_compressed_bodies_are_answered_like_plain_ones(client, encoding, pack):
    plain = post(client, json.dumps(BODY).encode())
    assert plain.status_code == 200, plain.text
    r = post(client, pack(json.dumps(BODY).encode()), **{"content-encoding": encoding})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == plain.json()["choices"][0]["text"]


def test_a_zip_bomb_is_refused_naming_the_limit(client):
    bomb = gzip.compress(b" " * (50 * LIMIT))  # 50 MB of JSON whitespace in about 50 kB
    assert len(bomb) < LIMIT
    err = _error(post(client, bomb, **{"content-encoding": "gzip"}), 413)
    assert f"over {LIMIT} bytes once decompressed" in err["message"]
    just_over = json.dumps({**BODY, "user": "x" * LIMIT}).encode()
    assert _error(post(client, zlib.compress(just_over), **{"content-encoding": "deflate"}), 413)


def test_decompression_never_holds_more_than_the_limit():
    from specguard_integrations.server.requests import decode_body

    bomb = gzip.compress(b"\0" * (200 * LIMIT))
    tracemalloc.start()
    try:
        with pytest.raises(HTTPError) as caught:
            decode_body(bomb, "gzip", LIMIT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert peak < 3 * LIMIT, f"decompression peaked at {peak} bytes"


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
def test_other_encodings_get_415_naming_them(client, encoding):
    err = _error(post(client, json.dumps(BODY).encode(), **{"content-encoding": encoding}), 415)
    assert repr(encoding) in err["message"] and "gzip" in err["message"]
    assert err["code"] == "unsupported_content_encoding"


def test_broken_compressed_bodies_get_400_naming_the_encoding(client):
    packed = gzip.compress(json.dumps(BODY).encode())
    cases = {
        "not gzip at all": json.dumps(BODY).encode(),
        "truncated": packed[: len(packed) // 2],
        "data after the compressed stream": packed + b"trailing",
    }
    for why, raw in cases.items():
        err = _error(post(client, raw, **{"content-encoding": "gzip"}), 400)
        assert err["message"].startswith("malformed gzip body"), (why, err)
        assert "malformed JSON" not in err["message"]
    assert post(client, packed, **{"content-encoding": "gzip"}).status_code == 200


# ------------------------------------------------------------------ completion prompts
@pytest.mark.parametrize(
    ("prompt", "named"),
    [('"ab\\ud800c"', "prompt"), ('["ab\\udc00c"]', "prompt[0]")],
)
def test_a_lone_surrogate_in_a_completion_prompt_is_named(client, prompt, named):
    raw = f'{{"model": "{NAME}", "prompt": {prompt}, "max_tokens": 4}}'.encode()
    err = _error(post(client, raw), 400)
    assert err["param"] == "prompt" and err["type"] == "invalid_request_error"
    assert err["message"].startswith(f"{named} cannot be encoded as UTF-8: character 2 is ")
    if named == "prompt":  # a chat message with the same text gets the same wording
        chat = f'{{"model": "{NAME}", "messages": [{{"role": "user", "content": {prompt}}}]}}'
        chat_err = _error(post(client, chat.encode(), "/v1/chat/completions"), 400)
        assert chat_err["message"].partition(" cannot")[2] == err["message"].partition(" cannot")[2]
    assert post(client, json.dumps(BODY).encode()).status_code == 200

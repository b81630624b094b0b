"""A server that stalls before its final status line and headers: ``103 Early Hints`` sent
forever, or the headers trickled a byte at a time. Each read returns in time, so only a deadline
over the whole exchange ends the call: under `EndpointTarget`, both frameworks' streams and
`specguard serve`, each ends within its deadline plus one second, and the same object then
answers a good request."""

from __future__ import annotations

import asyncio
import time

import pytest
from faulty_engine import ANSWER, CFG, MODEL, PROMPT, STEPS
from starlette.testclient import TestClient

from specguard_integrations import SpecGuard
from specguard_integrations.backends.remote.endpoint import EndpointTarget
from specguard_integrations.errors import DeadlinePassed, EndpointTimeout

DEADLINE = 1.5  # seconds: the request's timeout, or the generation's
SLACK = 1.0
STALLS = [
    {"mode": "early_hints", "seconds": 0.05},
    {"mode": "trickle_headers", "seconds": 0.05},
]
IDS = ["endless-103", "trickled-headers"]


def _engine(draft, engine, **kw):
    target = EndpointTarget(engine.url, MODEL, **{"max_retries": 0, "timeout": DEADLINE, **kw})
    return SpecGuard(draft, target, CFG)


def _ends_in_time(call, error=EndpointTimeout) -> float:
    t0 = time.monotonic()
    with pytest.raises(error, match="status line and headers"):
        call()
    took = time.monotonic() - t0
    assert took < DEADLINE + SLACK, took
    return took


@pytest.mark.parametrize("stall", STALLS, ids=IDS)
def test_endpoint_target_ends_at_its_deadline_mid_generation(draft, engine, stall):
    sg = _engine(draft, engine)
    stream = sg.stream(PROMPT)
    assert next(stream).text == STEPS[0] + "\n\n"  # a good step first
    engine.set(**stall)
    _ends_in_time(lambda: list(stream))
    engine.set(mode="ok")
    assert sg.generate(PROMPT).text == ANSWER


@pytest.mark.parametrize("stall", STALLS, ids=IDS)
def test_the_generation_timeout_ends_it_through_retries(draft, engine, stall):
    sg = _engine(draft, engine, timeout=30.0, max_retries=2)
    engine.set(**stall)
    _ends_in_time(lambda: sg.generate(PROMPT, timeout=DEADLINE), DeadlinePassed)


@pytest.mark.parametrize("stall", [*STALLS, {"mode": "hang", "seconds": 20}], ids=[*IDS, "hang"])
def test_reading_the_engine_ends_at_the_generation_deadline(draft, engine, stall):
    """The first call reads which engine serves the target (GET /v1/models, ...): a server that
    stalls there is bounded by the generation's timeout too, on the engine and through both
    frameworks, however long the endpoint's own timeout."""
    from specguard_integrations.langchain import SpecGuardLLM
    from specguard_integrations.llama_index import SpecGuardLLM as IndexLLM

    engine.set(**stall, probes=True)
    runs = [
        lambda: _engine(draft, engine, timeout=30.0, max_retries=2).generate(
            PROMPT, timeout=DEADLINE
        ),
        lambda: SpecGuardLLM(
            engine=_engine(draft, engine, timeout=30.0, max_retries=2), timeout=DEADLINE
        ).invoke(PROMPT),
        lambda: IndexLLM(
            engine=_engine(draft, engine, timeout=30.0, max_retries=2), timeout=DEADLINE
        ).complete(PROMPT),
    ]
    for run in runs:
        t0 = time.monotonic()
        with pytest.raises(DeadlinePassed):
            run()
        assert time.monotonic() - t0 < DEADLINE + SLACK
    engine.set(mode="ok")
    assert _engine(draft, engine).generate(PROMPT, timeout=DEADLINE).text == ANSWER


@pytest.mark.parametrize("stall", STALLS, ids=IDS)
def test_langchain_streams_end_at_the_deadline(draft, engine, stall):
    from specguard_integrations.langchain import ChatSpecGuard, SpecGuardLLM

    llm = SpecGuardLLM(engine=_engine(draft, engine))
    engine.set(**stall)
    _ends_in_time(lambda: list(llm.stream(PROMPT)))
    chat = ChatSpecGuard(engine=_engine(draft, engine))

    async def astream() -> None:
        async for _ in chat.astream("How many?"):
            pass

    _ends_in_time(lambda: asyncio.run(astream()))
    engine.set(mode="ok")
    assert "".join(llm.stream(PROMPT)) == ANSWER


@pytest.mark.parametrize("stall", STALLS, ids=IDS)
def test_llama_index_streams_end_at_the_deadline(draft, engine, stall):
    from specguard_integrations.llama_index import SpecGuardLLM

    llm = SpecGuardLLM(engine=_engine(draft, engine))
    engine.set(**stall)
    _ends_in_time(lambda: list(llm.stream_complete(PROMPT)))

    async def astream() -> None:
        async for _ in await llm.astream_complete(PROMPT):
            pass

    _ends_in_time(lambda: asyncio.run(astream()))


@pytest.mark.parametrize("stall", STALLS, ids=IDS)
def test_serve_answers_in_time_and_streams_the_error(draft, engine, stall):
    from specguard_integrations.server import create_app
    from specguard_integrations.server.served import SpecGuardServed

    sg = _engine(draft, engine)
    client = TestClient(create_app(SpecGuardServed(sg, CFG, name="sg")))
    body = {"model": "sg", "prompt": PROMPT, "max_tokens": 200, "temperature": 0}
    engine.set(**stall)
    t0 = time.monotonic()
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 504 and "status line and headers" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < DEADLINE + SLACK
    t0 = time.monotonic()
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
        lines = [line for line in s.iter_lines() if line.startswith("data:")]
    assert time.monotonic() - t0 < DEADLINE + SLACK
    assert s.status_code == 200 and "timed out" in lines[-1], lines
    engine.set(mode="ok")
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == ANSWER

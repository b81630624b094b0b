"""Every end reason an engine can send, one test per row of the table in docs/scale-out.md
("End reasons"), against the scripted engine: each continues, ends with its own finish
reason, or raises a typed error naming the server. None but an engine's own end of sequence
reads as a clean stop, and half a step is never an answer."""

from __future__ import annotations

import pytest
from faulty_engine import ANSWER, CFG, MODEL, PROMPT, STEPS
from starlette.testclient import TestClient

from specguard_integrations import SpecGuard
from specguard_integrations.backends.remote.endpoint import EndpointTarget
from specguard_integrations.backends.remote.replies import END_REASONS
from specguard_integrations.errors import EndpointAborted, EndpointError, EndpointReplyError

FIRST = STEPS[0] + "\n\n"
HALF = FIRST[: len(FIRST) // 2]  # what the engine wrote before it ended the step


def _sg(draft, engine, cfg=CFG):
    return SpecGuard(draft, EndpointTarget(engine.url, MODEL, max_retries=0, timeout=5.0), cfg)


def _first_step_ends(draft, engine, finish):
    """The generation when the engine ends its first step with `finish`."""
    engine.set(mode="finish", finish=finish, times=1)
    return _sg(draft, engine).generate(PROMPT)


def test_stop_at_a_boundary_continues(draft, engine):
    r = _sg(draft, engine).generate(PROMPT)
    assert r.steps[0].finish == "boundary" and r.text == ANSWER


@pytest.mark.parametrize("finish", ["stop", None, "eos", "eos_token"])
def test_an_end_of_sequence_ends_the_generation(draft, engine, finish):
    """ "stop" with no stop string matched (vLLM's stop_reason null), a missing reason, and an
    EOS the engine names: the model's own end, the only clean stop."""
    r = _first_step_ends(draft, engine, finish)
    assert r.finish_reason == "eos" and r.openai_finish_reason() == "stop"
    assert r.text == HALF and len(r.steps) == 1


def test_stop_sequence_is_a_boundary_whichever_engine_says_it(draft, engine):
    r = _first_step_ends(draft, engine, "stop_sequence")
    assert r.steps[0].finish == "boundary" and r.steps[0].text == HALF + "\n\n"
    assert len(r.steps) > 1  # the generation went on


def test_length_short_of_the_budget_is_the_context_window(draft, engine):
    r = _first_step_ends(draft, engine, "length")
    assert r.finish_reason == "context_window" and r.openai_finish_reason() == "length"


def test_length_at_the_budget_cuts_the_step_and_goes_on(draft, engine):
    sg = _sg(draft, engine, CFG.merged(max_step_tokens=8, max_steps=30))
    r = sg.generate(PROMPT)  # the engine cuts each step at 8 characters, "length"
    assert r.steps[0].finish == "max_step_tokens" and r.text == ANSWER


def test_content_filter_ends_the_generation_and_says_so(draft, engine):
    r = _first_step_ends(draft, engine, "content_filter")
    assert r.finish_reason == "content_filter" and r.openai_finish_reason() == "content_filter"
    assert r.text == HALF and r.steps[-1].finish == "content_filter"


def test_abort_raises_and_yields_nothing_of_the_step(draft, engine):
    engine.set(mode="finish", finish="abort", times=1)
    seen = []
    with pytest.raises(EndpointAborted, match="aborted the request") as info:
        seen.extend(_sg(draft, engine).stream(PROMPT))
    assert seen == [] and engine.url in str(info.value)


@pytest.mark.parametrize("finish", ["tool_calls", "function_call"])
def test_a_tool_call_parsed_by_the_engine_raises(draft, engine, finish):
    with pytest.raises(EndpointReplyError, match=f"finish_reason '{finish}'.*tool call"):
        _first_step_ends(draft, engine, finish)


@pytest.mark.parametrize("finish", ["banana", "STOP", "error", ""])
def test_an_unknown_end_reason_raises_naming_it(draft, engine, finish):
    if not finish:  # an empty string is as good as none: read as stop
        assert _first_step_ends(draft, engine, finish).finish_reason == "eos"
        return
    with pytest.raises(EndpointReplyError, match=f"finish_reason '{finish}' is not one"):
        _first_step_ends(draft, engine, finish)


def test_every_row_of_the_table_is_tested():
    tested = {"stop", "stop_sequence", "length", "eos", "eos_token", "content_filter"}
    assert set(END_REASONS) == tested


def test_serve_passes_content_filter_on_and_answers_abort_with_an_error(draft, engine):
    from specguard_integrations.server import create_app
    from specguard_integrations.server.served import SpecGuardServed

    sg = _sg(draft, engine)
    client = TestClient(create_app(SpecGuardServed(sg, CFG, name="sg")))
    body = {"model": "sg", "prompt": PROMPT, "max_tokens": 200, "temperature": 0}
    engine.set(mode="finish", finish="content_filter")
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "content_filter"
    chat = {"model": "sg", "messages": [{"role": "user", "content": "How many?"}]}
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "content_filter"
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
        finals = [line for line in s.iter_lines() if '"finish_reason": "content_filter"' in line]
    assert len(finals) == 1
    engine.set(mode="finish", finish="abort")
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 502 and "aborted" in r.json()["error"]["message"]
    assert issubclass(EndpointAborted, EndpointError)

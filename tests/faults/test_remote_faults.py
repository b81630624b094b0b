"""Fault injection at the remote edge: a scripted engine switched into each failure mode, under
`EndpointTarget` and `EndpointDraft`. Each case recovers or raises a typed error naming the
server within its deadline; the steps already yielded are the target's own; the same object then
answers a good request."""

from __future__ import annotations

import re
import time

import pytest
from faulty_engine import ANSWER, CFG, MODEL, PROMPT, STEPS, FaultyEngine

from specguard_integrations import SpecGuard
from specguard_integrations.backends.remote.endpoint import EndpointDraft, EndpointTarget
from specguard_integrations.errors import (
    EndpointReplyError,
    EndpointTimeout,
    EndpointUnreachable,
)
from specguard_integrations.testing import tiny_lm


def _pair(draft, engine, **kw):
    target = EndpointTarget(engine.url, MODEL, **{"max_retries": 2, "timeout": 5.0, **kw})
    return SpecGuard(draft, target, CFG), target


def _good(sg):
    r = sg.generate(PROMPT)
    assert r.text == ANSWER and r.finish_reason == "final_answer"
    assert [s.text for s in r.steps] == [STEPS[0] + "\n\n", STEPS[1] + "\n\n", STEPS[2] + "\n"]
    assert all(s.source == "target" for s in r.steps)
    return r


def _steps_until_error(sg, error, match):
    """The records yielded before the generation raised `error` (matching `match`)."""
    seen = []
    with pytest.raises(error, match=match):
        for record in sg.stream(PROMPT):
            seen.append(record)
    return seen


def test_a_good_engine_writes_every_step(draft, engine):
    sg, _ = _pair(draft, engine)
    _good(sg)


@pytest.mark.parametrize(
    "fault",
    [
        {"mode": "status", "status": 500, "times": 2},
        {"mode": "status", "status": 503, "times": 1},
        {"mode": "cut", "times": 1},
        {"mode": "hang", "seconds": 3.0, "times": 1},
    ],
    ids=["500-twice", "503", "body-cut-off", "hang-once"],
)
def test_passing_faults_are_retried_and_the_answer_is_whole(draft, engine, fault):
    sg, _ = _pair(draft, engine, timeout=1.0)
    engine.set(**fault)
    _good(sg)
    assert engine.log.faults == fault["times"]


def test_retry_after_is_honoured_and_capped(draft, engine):
    sg, _ = _pair(draft, engine)
    engine.set(mode="status", status=429, retry_after="0.4", times=2)
    t0 = time.monotonic()
    _good(sg)
    assert time.monotonic() - t0 >= 0.8  # waited as asked, twice
    engine.set(mode="status", status=429, retry_after="3600", times=1)
    t0 = time.monotonic()
    from specguard_integrations.backends.remote import client

    saved = client.RETRY_AFTER_CAP
    client.RETRY_AFTER_CAP = 0.3
    try:
        _good(sg)
    finally:
        client.RETRY_AFTER_CAP = saved
    assert time.monotonic() - t0 < 5  # an hour asked, the cap taken


@pytest.mark.parametrize(
    ("fault", "error", "match", "within"),
    [
        ({"mode": "status", "status": 500}, EndpointUnreachable, r"answered 500.*3 attempts", 15),
        ({"mode": "hang", "seconds": 20.0}, EndpointTimeout, "within the deadline", 6),
        ({"mode": "trickle", "seconds": 0.05}, EndpointTimeout, "whole body", 6),
        ({"mode": "overlong", "tokens": 1000}, EndpointReplyError, r"1000 tokens.*64", 5),
        ({"mode": "empty_boundary"}, EndpointReplyError, "3 empty steps in a row", 5),
        ({"mode": "malformed", "shape": b"<html>oops</html>"}, EndpointReplyError, "not JSON", 5),
        ({"mode": "malformed", "shape": []}, EndpointReplyError, "JSON object was expected", 5),
        ({"mode": "malformed", "shape": {"choices": {}}}, EndpointReplyError, "must be a list", 5),
        (
            {"mode": "malformed", "shape": {"choices": [{"index": 0, "text": 5}]}},
            EndpointReplyError,
            "text is not a string",
            5,
        ),
        (
            {
                "mode": "malformed",
                "shape": b'{"choices": [{"index": 0, "text": "a", "finish_reason": "stop"}],'
                b' "usage": {"completion_tokens": Infinity}}',
            },
            EndpointReplyError,
            "not JSON",
            5,
        ),
        (
            {
                "mode": "malformed",
                "shape": {
                    "choices": [{"index": 0, "text": "a", "finish_reason": "stop"}],
                    "usage": {"completion_tokens": -5},
                },
            },
            EndpointReplyError,
            r"usage.completion_tokens is -5",
            5,
        ),
        (
            {
                "mode": "malformed",
                "shape": b'{"choices": [{"index": 0, "text": "a", "finish_reason": "stop"}],'
                b' "usage": {"completion_tokens": 1e999}}',
            },
            EndpointReplyError,
            r"usage.completion_tokens is inf",
            5,
        ),
        ({"mode": "malformed", "shape": {"choices": []}}, EndpointReplyError, "0 choices", 5),
    ],
    ids=[
        "500-always",
        "hang",
        "trickle",
        "overlong",
        "empty-boundary-always",
        "not-json",
        "array",
        "choices-object",
        "text-number",
        "infinity",
        "negative-usage",
        "overflowing-usage",
        "no-choices",
    ],
)
def test_lasting_faults_raise_a_typed_error_naming_the_server_in_time(
    draft, engine, fault, error, match, within
):
    sg, _ = _pair(draft, engine, timeout=1.0)
    stream = sg.stream(PROMPT)
    kept = [next(stream)]  # a good step first: the fault comes mid-generation
    engine.set(**fault)
    t0 = time.monotonic()
    with pytest.raises(error, match=match) as info:
        kept += list(stream)
    assert time.monotonic() - t0 < within
    assert engine.url in str(info.value)
    assert [r.text for r in kept] == [STEPS[0] + "\n\n"]  # what was yielded is the target's own
    engine.set(mode="ok")
    _good(sg)  # the same object answers a good request


def test_a_refused_connection_is_unreachable_and_named(draft):
    e = FaultyEngine()
    url = e.url
    e.stop()  # nothing listens there now
    sg = SpecGuard(draft, EndpointTarget(url, MODEL, max_retries=1, timeout=1.0), CFG)
    with pytest.raises(EndpointUnreachable, match=rf"{url}.*2 attempts"):
        sg.generate(PROMPT)


def test_an_engine_that_dies_after_n_requests(draft, engine):
    sg, _ = _pair(draft, engine, max_retries=1, timeout=1.0)
    engine.set(mode="dies", after=1)  # the first step is answered, then the engine is gone
    seen = _steps_until_error(sg, EndpointUnreachable, engine.url.replace(".", r"\."))
    assert [r.text for r in seen] == [STEPS[0] + "\n\n"]


def test_a_stop_at_a_boundary_is_never_the_end(draft, engine):
    sg, _ = _pair(draft, engine)
    engine.set(mode="empty_boundary", times=1)  # the first step is only the boundary
    r = sg.generate(PROMPT)
    assert r.finish_reason == "final_answer"
    assert r.steps[0].finish == "boundary" and r.steps[0].text == "\n\n"
    assert r.text == "\n\n" + ANSWER


def test_zero_token_length_replies_end_at_the_context_window_not_in_a_loop(draft, engine):
    sg, _ = _pair(draft, engine)
    engine.set(mode="zero_length")
    r = sg.generate(PROMPT)
    assert r.finish_reason == "context_window" and len(engine.log.requests) == 1


def test_a_length_cut_short_of_the_budget_is_the_context_window():
    from specguard_integrations.backends.remote.replies import Completion, to_candidate
    from specguard_integrations.engine.backends import DecodeSettings
    from specguard_integrations.segmentation import make_segmenter

    settings = DecodeSettings(1, 0.0, 1.0, 64, make_segmenter("blank_line", ("Answer:",)))
    short = Completion("Tom has", "length", False, 3, 10, None, None, counted=True)
    assert to_candidate(short, settings).finish == "context_window"
    full = Completion("Tom has", "length", False, 64, 10, None, None, counted=True)
    assert to_candidate(full, settings).finish == "max_step_tokens"
    guessed = Completion("Tom has", "length", False, 3, 10, None, None, counted=False)
    assert to_candidate(guessed, settings).finish == "max_step_tokens"


def test_a_generation_timeout_bounds_a_request_in_flight(draft, engine):
    sg, _ = _pair(draft, engine, timeout=30.0, max_retries=0)
    engine.set(mode="hang", seconds=20.0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        sg.generate(PROMPT, timeout=1.0)
    assert time.monotonic() - t0 < 3


def test_remote_draft_faults(engine):
    local_target = tiny_lm("llama", seed=5, layers=2)
    d = EndpointDraft(engine.url, MODEL, max_retries=1, timeout=1.0)
    sg = SpecGuard(d, local_target, CFG.merged(tau=0.0, k=2, temperature=0.5))
    r = sg.generate(PROMPT)  # every draft step accepted
    assert r.text == ANSWER and all(s.source == "draft" for s in r.steps)
    engine.set(mode="overlong", tokens=500)
    with pytest.raises(EndpointReplyError, match=r"answered \d+ tokens .* at most 64"):
        sg.generate(PROMPT)
    engine.set(mode="status", status=500, times=1)
    assert sg.generate(PROMPT).text == ANSWER


def test_a_remote_step_that_breaks_a_constraint_is_refused(draft, engine):
    from specguard_integrations.constraint import Constraint

    sg, _ = _pair(draft, engine)
    c = Constraint.regex(r"Tom has [0-9]+ apples\.\n\n[\s\S]*")
    with pytest.raises(EndpointReplyError, match="breaks the regex constraint"):
        sg.generate(PROMPT, constraint=Constraint.regex(r"[0-9]+"))
    r = sg.generate(PROMPT, constraint=c)  # the scripted answer fits this one
    assert r.text == ANSWER
    # a remote draft samples unconstrained: its steps that break the constraint are rejected
    # and the (local, constrained) target writes them
    digits = Constraint.regex(r"[0-9]{1,3}")
    d = EndpointDraft(engine.url, MODEL)
    r = SpecGuard(d, draft, CFG.merged(tau=0.01)).generate(PROMPT, constraint=digits)
    assert re.fullmatch(r"[0-9]{1,3}", r.text) and {s.source for s in r.steps} == {"target"}
    assert all(s.confidence == -1e9 for s in r.steps)

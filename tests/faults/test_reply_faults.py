"""Replies that look like answers and are not: a redirect (never followed), an error object
under a 200 (its own message surfaced), text holding a lone surrogate, a chat step whose
content is null. Each is an `EndpointReplyError` naming the server, raised at once: nothing of it
reaches the draft's tokenizer or is streamed as a step."""

from __future__ import annotations

import pytest
from faulty_engine import CFG, MODEL, PROMPT, STEPS

from specguard_integrations import SpecGuard
from specguard_integrations.backends.remote.endpoint import EndpointTarget
from specguard_integrations.errors import EndpointReplyError


def _sg(draft, engine, **kw):
    target = EndpointTarget(engine.url, MODEL, **{"max_retries": 2, "timeout": 5.0, **kw})
    return SpecGuard(draft, target, CFG)


def _mid_generation(sg, engine, fault, match):
    """The fault after a good first step: it raises, and only the good step was yielded."""
    stream = sg.stream(PROMPT)
    kept = [next(stream)]
    engine.set(**fault)
    with pytest.raises(EndpointReplyError, match=match) as info:
        kept += list(stream)
    assert [r.text for r in kept] == [STEPS[0] + "\n\n"]
    assert engine.url in str(info.value)
    return info.value


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_named_and_not_followed(draft, engine, status):
    fault = {"mode": "redirect", "status": status, "message": engine.url + "/elsewhere"}
    _mid_generation(_sg(draft, engine), engine, fault, f"answered {status}, a redirect to")
    assert len(engine.log.requests) == 1  # not retried, and nothing sent where it pointed


@pytest.mark.parametrize(
    "shape",
    [
        {"object": "error", "message": "The model `x` does not exist.", "code": 404},
        {"error": {"message": "The model `x` does not exist.", "type": "invalid_request_error"}},
        {"error": "The model `x` does not exist."},
    ],
    ids=["vllm", "openai", "bare"],
)
def test_an_error_object_under_200_surfaces_its_message(draft, engine, shape):
    fault = {"mode": "malformed", "shape": shape}
    _mid_generation(_sg(draft, engine), engine, fault, "an error with status 200: The model `x`")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"choices": [{"index": 0, "text": "Tom \\ud800", "finish_reason": "stop"}]}',
        b'{"choices": [{"index": 0, "text": "x\\udfff\\n\\n", "finish_reason": "stop"}]}',
        b'{"choices": [{"index": 0, "text": "a", "finish_reason": "stop", "\\ud83d": 1}]}',
    ],
    ids=["high", "low", "in-a-key"],
)
def test_a_lone_surrogate_is_malformed_data_not_a_tokenizer_error(draft, engine, raw):
    fault = {"mode": "malformed", "shape": raw}
    _mid_generation(_sg(draft, engine), engine, fault, "not valid Unicode")


def test_a_surrogate_pair_is_text(draft, engine):
    from specguard_integrations.backends.remote.client import _json

    pair = b'{"choices": [{"text": "\\ud83d\\ude00"}]}'
    assert _json(pair, "u")["choices"][0]["text"] == "\N{GRINNING FACE}"


def test_a_null_chat_content_is_refused_at_once(draft, engine):
    null = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None},
                "finish_reason": "stop",
                "stop_reason": "\n\n",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    target = EndpointTarget(engine.url, MODEL, api="chat", engine="vllm", max_retries=2)
    sg = SpecGuard(draft, target, CFG)
    engine.set(mode="malformed", shape=null)
    seen = []
    with pytest.raises(EndpointReplyError, match=r"message\.content is null"):
        seen.extend(sg.stream(PROMPT))
    assert seen == [] and len(engine.log.requests) == 1  # no blank step was streamed

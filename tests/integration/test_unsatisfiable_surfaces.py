"""Constraints that no text satisfies are refused before anything is generated, on every
surface: the Python API (a `ValueError` naming ``constraint``), `with_structured_output` (the
same, from the forced call's grammar), and `specguard serve` (a 400 naming ``response_format`` or
the tool's ``parameters``). And no surface ever returns ``stop`` with text that breaks its
constraint: a reply cut short ends ``length``, with no parsed object."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from starlette.testclient import TestClient

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.constraint import Constraint
from specguard_integrations.testing import tiny_lm

pytest.importorskip("llguidance")

PROMPT = "Q: how heavy is the parcel?\n"
NAME = "tiny"
# the four classes of the issue, each as a JSON schema
UNSAT = {
    "self-reference": {"$ref": "#"},
    "empty-enum": {"enum": []},
    "regex-no-match": {"type": "string", "pattern": r"[^\s\S]"},
    "min-over-max": {"type": "array", "minItems": 3, "maxItems": 1},
}
SCHEMA = {
    "type": "object",
    "properties": {"kg": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["kg"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def sg():
    cfg = SpecGuardConfig(
        k=2, temperature=0.9, top_p=0.95, tau=0.5, max_step_tokens=16, max_new_tokens=48
    )
    return SpecGuard(tiny_lm("llama", seed=1, layers=2), tiny_lm("llama", seed=2, layers=2), cfg)


@pytest.fixture(scope="module")
def client(sg):
    from specguard_integrations.server import create_app
    from specguard_integrations.server.served import SpecGuardServed

    return TestClient(create_app(SpecGuardServed(sg, sg.config, name=NAME)))


def _as_tool(schema: dict) -> dict:
    """An object schema whose one required property is `schema`: a tool's parameters."""
    return {"type": "object", "properties": {"x": schema}, "required": ["x"]}


@pytest.mark.parametrize("schema", UNSAT.values(), ids=UNSAT)
def test_the_python_api_refuses_it_naming_constraint(sg, schema):
    with pytest.raises(ValueError, match=r"^constraint: .*(no text satisfies|Unsatisfiable)"):
        sg.generate(PROMPT, constraint=Constraint.json_schema(schema))
    with pytest.raises(ValueError, match="constraint"):
        sg.generate(PROMPT, config=sg.config.merged(constraint={"json_schema": schema}))


def test_a_regex_constraint_with_no_match_is_refused(sg):
    with pytest.raises(ValueError, match=r"^constraint: .*no text satisfies it"):
        sg.generate(PROMPT, constraint=Constraint.regex(r"[^\s\S]"))


@pytest.mark.parametrize("schema", UNSAT.values(), ids=UNSAT)
def test_with_structured_output_refuses_it(sg, schema):
    from specguard_integrations.langchain import ChatSpecGuard

    # refused where the schema is bound, before any call (every chat surface binds this way)
    with pytest.raises(ValueError, match=r"parameters: no arguments satisfy the schema"):
        structured = ChatSpecGuard(engine=sg).with_structured_output(
            _as_tool(schema) | {"title": "t"}
        )
        structured.invoke("How heavy?")


@pytest.mark.parametrize("schema", UNSAT.values(), ids=UNSAT)
def test_serve_answers_400_naming_response_format_and_tool_parameters(client, schema):
    messages = [{"role": "user", "content": "How heavy?"}]
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    r = client.post(
        "/v1/chat/completions", json={"model": NAME, "messages": messages, "response_format": rf}
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "response_format.json_schema.schema"
    assert err["message"].startswith("response_format")
    tool = {"type": "function", "function": {"name": "f", "parameters": _as_tool(schema)}}
    for choice in ("auto", "required"):
        body = {"model": NAME, "messages": messages, "tools": [tool], "tool_choice": choice}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "tools[0].function.parameters"


# ---------------------------------------------------------------- never stop with bad text
def _fits(kind: str, source: str, text: str) -> bool:
    if kind == "regex":
        return re.fullmatch(source, text) is not None
    try:
        jsonschema.validate(json.loads(text), json.loads(source))
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


@pytest.mark.parametrize("budget", [4, 48])
def test_the_python_api_never_stops_with_text_that_breaks_the_constraint(sg, budget):
    for c in (Constraint.json_schema(SCHEMA), Constraint.regex(r"[0-9]{2,3} kg")):
        for seed in range(4):
            cfg = sg.config.merged(seed=seed, max_new_tokens=budget)
            r = sg.generate(PROMPT, config=cfg, constraint=c)
            if r.openai_finish_reason() == "stop":
                assert _fits(c.kind, c.source, r.text), (r.finish_reason, r.text)
            else:
                assert r.openai_finish_reason() == "length", r.finish_reason


@pytest.mark.parametrize("budget", [3, 200])
def test_serve_never_stops_with_a_reply_that_breaks_its_schema(client, budget):
    messages = [{"role": "user", "content": "How heavy?"}]
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    for seed in range(3):
        body = {"model": NAME, "messages": messages, "response_format": rf}
        body |= {"max_tokens": budget, "seed": seed}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        if choice["finish_reason"] == "stop":
            jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)
        else:  # cut: the JSON as written so far, never the call's markup
            assert choice["finish_reason"] == "length"
            assert '"arguments"' not in (choice["message"]["content"] or "")


def test_with_structured_output_parses_or_names_the_cut(sg):
    from specguard_integrations.langchain import ChatSpecGuard

    for budget in (3, 200):
        chat = ChatSpecGuard(engine=sg, max_tokens=budget)
        out = chat.with_structured_output(SCHEMA | {"title": "w"}, include_raw=True).invoke("?")
        finish = out["raw"].response_metadata.get("finish_reason")
        if out["parsed"] is not None:
            jsonschema.validate(out["parsed"], SCHEMA)
        else:
            assert finish == "length" and out["parsing_error"] is not None


def test_serve_seed_out_of_range_is_a_400_naming_seed(client):
    for seed in (2**70, -1):
        body = {"model": NAME, "prompt": PROMPT, "max_tokens": 2, "seed": seed}
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "seed", r.text

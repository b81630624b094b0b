"""Constrained steps on tiny random-weight models, whose unconstrained output is never valid: every
constrained output matches its JSON schema, regex or Lark grammar, sampled and greedy, k > 1,
whichever model wrote each step; with tau > 1 the text is the target's own constrained greedy
decoding; a constraint asked for nothing changes nothing."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.baselines.plain import plain_stream
from specguard_integrations.constraint import Constraint
from specguard_integrations.testing import tiny_lm

PROMPT = "Q: how heavy is the parcel?\n"
SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "integer", "minimum": 0, "maximum": 999},
        "unit": {"enum": ["kg", "g"]},
        "note": {"type": "string", "maxLength": 6},
    },
    "required": ["answer", "unit"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def pair():
    return tiny_lm("llama", seed=1, layers=2), tiny_lm("llama", seed=2, layers=2)


def _cfg(**kw):
    base = {"k": 3, "temperature": 0.9, "top_p": 0.95, "max_new_tokens": 96, "max_step_tokens": 24}
    return SpecGuardConfig(**{**base, **kw})


@pytest.mark.parametrize(
    ("mode", "tau"), [("sampled", 0.3), ("sampled", 0.7), ("greedy", 0.5)], ids=str
)
def test_every_constrained_output_is_valid_json_under_the_schema(pair, mode, tau):
    draft, target = pair
    sg = SpecGuard(draft, target, _cfg(tau=tau))
    c = Constraint.json_schema(SCHEMA)
    sources = set()
    for seed in range(50 if mode == "sampled" else 10):
        cfg = sg.config.merged(seed=seed)
        if mode == "greedy":
            cfg = cfg.merged(k=1, temperature=0.0)
        r = sg.generate(PROMPT, config=cfg, constraint=c)
        jsonschema.validate(json.loads(r.text), SCHEMA)  # raises on an invalid output
        sources |= {s.source for s in r.steps}
    assert "draft" in sources
    assert tau < 0.7 or "target" in sources  # at this tau both wrote constrained steps


def test_unconstrained_output_of_these_models_is_never_valid(pair):
    draft, target = pair
    sg = SpecGuard(draft, target, _cfg(tau=0.5))
    for seed in range(10):
        text = sg.generate(PROMPT, config=sg.config.merged(seed=seed)).text
        with pytest.raises((ValueError, jsonschema.ValidationError)):
            jsonschema.validate(json.loads(text), SCHEMA)


def test_with_tau_above_one_the_text_is_the_targets_constrained_greedy_decoding(pair):
    draft, target = pair
    sg = SpecGuard(draft, target, _cfg(tau=1.5, k=1, temperature=0.0))
    for schema in (SCHEMA, {"type": "object", "properties": {"ok": {"type": "boolean"}}}):
        c = Constraint.json_schema(schema)
        r = sg.generate(PROMPT, constraint=c)
        assert all(s.source == "target" for s in r.steps)
        stream = plain_stream(target, PROMPT, max_tokens=96, constraint=c)
        try:
            while True:
                next(stream)
        except StopIteration as done:
            alone = done.value
        assert r.text == alone.text


def test_regex_and_lark_constraints(pair):
    draft, target = pair
    sg = SpecGuard(draft, target, _cfg(tau=0.5, max_new_tokens=40))
    pattern = r"Answer: [0-9]{1,3} (kg|g)\."
    lark = 'start: "Answer: " NUM " " UNIT "."\nNUM: /[0-9]{1,3}/\nUNIT: "kg" | "g"\n'
    for c in (Constraint.regex(pattern), Constraint.lark(lark)):
        for seed in range(10):
            text = sg.generate(PROMPT, config=sg.config.merged(seed=seed), constraint=c).text
            assert re.fullmatch(pattern, text), (c.kind, text)


def test_a_constraint_in_the_config_holds_for_every_call_and_a_call_replaces_it(pair, tmp_path):
    draft, target = pair
    pattern = r"Answer: [0-9]{1,3} (kg|g)\."
    cfg = _cfg(tau=0.5, max_new_tokens=40, constraint={"regex": pattern})
    path = tmp_path / "cfg.json"
    cfg.to_file(path)  # a config file carries it too
    sg = SpecGuard(draft, target, SpecGuardConfig.from_file(path))
    for seed in range(5):
        assert re.fullmatch(pattern, sg.generate(PROMPT, config=sg.config.merged(seed=seed)).text)
    digits = sg.generate(PROMPT, constraint=Constraint.regex("[0-9]{2}")).text
    assert re.fullmatch("[0-9]{2}", digits)  # the call's own constraint replaces the config's
    # a Constraint object is taken as its spec
    as_object = _cfg(constraint=Constraint.json_schema(SCHEMA))
    assert as_object.constraint == {"json_schema": SCHEMA}
    as_json = SpecGuard(draft, target, _cfg(tau=0.5, constraint={"json_schema": SCHEMA}))
    jsonschema.validate(json.loads(as_json.generate(PROMPT).text), SCHEMA)
    for bad, why in (
        ({"regex": "([a-z"}, "constraint: regex"),
        ({"regex": "a", "lark": "b"}, "exactly one"),
        ({"json": {}}, "exactly one"),
        ({"json_schema": "[1]"}, "JSON object"),
        ({"lark": ""}, "non-empty"),
        ({"regex": "(?<=a)b"}, "look-around"),  # Python's re takes it; the sampler cannot
        ({"lark": "this is not lark"}, "lark does not compile"),
        ({"json_schema": {"type": "nonsense"}}, "json_schema does not compile"),
    ):
        with pytest.raises(ValueError, match=why):
            _cfg(constraint=bad)


def test_bad_constraints_are_named():
    with pytest.raises(ValueError, match="regex"):
        Constraint.regex("([a-z")
    with pytest.raises(ValueError, match="json_schema: not JSON"):
        Constraint.json_schema("{nope")
    with pytest.raises(ValueError, match="lark: the grammar is empty"):
        Constraint.lark("  ")


def test_a_grammar_that_does_not_compile_is_named(pair):
    draft, target = pair
    sg = SpecGuard(draft, target, _cfg())
    with pytest.raises(ValueError, match="lark constraint does not compile"):
        sg.generate(PROMPT, constraint=Constraint.lark("start: undefined_rule\n"))
    with pytest.raises(TypeError, match="constraint must be a Constraint"):
        sg.generate(PROMPT, constraint={"type": "object"})  # type: ignore[arg-type]


def test_no_constraint_changes_nothing(pair):
    draft, target = pair
    sg = SpecGuard(draft, target, _cfg(tau=0.5, seed=4))
    assert sg.generate(PROMPT).text == sg.generate(PROMPT, constraint=None).text


def test_an_opener_token_grammar_runs_on_a_pair_whose_vocabularies_differ():
    """The auto grammar names the chat model's `<tool_call>` by its id; a draft whose
    vocabulary has no such token samples under the grammar's text twin instead."""
    from specguard_integrations.backends.local.grammar import Matcher
    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.chat import prepare_chat
    from specguard_integrations.langchain import ChatSpecGuard
    from specguard_integrations.testing import char_tokenizer, tiny_model

    tok = char_tokenizer()
    tok.add_tokens(["<tool_call>", "</tool_call>"])
    target = LocalCausalLM(tiny_model("llama", vocab_size=len(tok), seed=2, layers=3), tok)
    draft = tiny_lm("llama", seed=1)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    msgs = [{"role": "user", "content": "Weather in Oslo?"}]
    call = prepare_chat(target, msgs, tools=tools, tool_choice="auto")
    assert call.constraint.tokens and "<[" in call.constraint.source
    text = 'Hi <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
    for lm in (target, draft):  # by id on the target, by the text twin on the draft
        m = Matcher.start(lm, call.constraint)
        m.follow(lm.encode_continuation(text))
        assert m.accepting
    engine = SpecGuard(draft, target, _cfg(k=2, tau=0.5, max_new_tokens=24, max_step_tokens=4))
    msg = ChatSpecGuard(engine=engine).bind_tools(tools, tool_choice="auto").invoke("Oslo?")
    assert not msg.invalid_tool_calls and "<tool_call>" not in msg.content

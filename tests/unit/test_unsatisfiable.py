"""Constraints that no text satisfies are refused when they are compiled, naming why; the
schemas a value can satisfy (recursion with a base case, a branch that ends it) are not; the
config's seed and its file are checked at the door, naming the field."""

from __future__ import annotations

import json

import pytest

from specguard_integrations import SpecGuardConfig
from specguard_integrations.constraint import Constraint
from specguard_integrations.constraint.satisfiable import (
    embedded_schemas,
    schema_unsatisfiable,
    unsatisfiable,
)
from specguard_integrations.errors import ConfigError, InvalidInputError, MissingAssetError

# each class the issue names, and more of each, with a word the reason must hold
UNSATISFIABLE = {
    "self-reference": ({"$ref": "#"}, "refers back to #"),
    "defs-cycle": ({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}, "refers back"),
    "mutual-cycle": (
        {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}},
        "refers back",
    ),
    "required-self": (
        {"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]},
        "required property 'next'",
    ),
    "array-of-self": (
        {"type": "array", "items": {"$ref": "#"}, "minItems": 1},
        "refers back",
    ),
    "empty-enum": ({"enum": []}, "enum is empty"),
    "enum-of-other-type": ({"type": "string", "enum": [1, 2]}, "no value is of type string"),
    "empty-anyOf": ({"anyOf": []}, "no branch"),
    "false": (False, "is false"),
    "required-false": (
        {"type": "object", "properties": {"a": False}, "required": ["a"]},
        "required property 'a'",
    ),
    "required-not-allowed": (
        {"type": "object", "required": ["a"], "additionalProperties": False},
        "required property 'a'",
    ),
    "min-items-over-max": ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems (3)"),
    "min-length-over-max": ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    "minimum-over-maximum": ({"type": "number", "minimum": 5, "maximum": 2}, "bounds"),
    "no-integer-between": ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, "no integer"),
    "exclusive-equal": (
        {"type": "number", "exclusiveMinimum": 3, "exclusiveMaximum": 3},
        "lies between the bounds",
    ),
    "min-properties-over-max": (
        {"type": "object", "minProperties": 2, "maxProperties": 1},
        "minProperties",
    ),
    "nested": (
        {
            "type": "object",
            "properties": {"tags": {"type": "array", "minItems": 2, "maxItems": 0}},
            "required": ["tags"],
        },
        "#/properties/tags",
    ),
    "required-pattern-false": (
        {"type": "object", "patternProperties": {"^x": False}, "required": ["xa"]},
        "patternProperties/^x",
    ),
}

SATISFIABLE = {
    "optional-self": {"type": "object", "properties": {"next": {"$ref": "#"}}},
    "tree": {
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["kids"],
            }
        },
    },
    "branch-ends-it": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
    "linked-list": {
        "type": "object",
        "properties": {
            "value": {"type": "integer"},
            "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
        },
        "required": ["value", "next"],
    },
    "number-enum": {"type": "number", "enum": [1, 2.5]},
    "integer-range": {"type": "integer", "minimum": 1.5, "maximum": 2.5},
    "untyped-bounds": {"minItems": 3, "maxItems": 1},  # a string satisfies it
    "empty": {},
    "true": True,
    # a required property matched by a pattern is not an additional one
    "required-by-pattern": {
        "type": "object",
        "patternProperties": {"^x_": {"type": "string"}},
        "additionalProperties": False,
        "required": ["x_name"],
    },
    "unreadable-pattern": {
        "type": "object",
        "patternProperties": {"\\p{L}+": {}},
        "additionalProperties": False,
        "required": ["a"],
    },
}


@pytest.mark.parametrize(("schema", "why"), UNSATISFIABLE.values(), ids=UNSATISFIABLE)
def test_a_schema_no_value_satisfies_is_named(schema, why):
    reason = unsatisfiable(schema)
    assert reason is not None and why in reason, reason


@pytest.mark.parametrize("schema", SATISFIABLE.values(), ids=SATISFIABLE)
def test_a_schema_some_value_satisfies_is_not_refused(schema):
    assert unsatisfiable(schema) is None
    if isinstance(schema, dict):
        assert Constraint.json_schema(schema).compile_error() is None


@pytest.mark.parametrize(("schema", "why"), UNSATISFIABLE.values(), ids=UNSATISFIABLE)
def test_every_kind_of_constraint_refuses_it_when_compiled(schema, why):
    if not isinstance(schema, dict):
        return
    c = Constraint.json_schema(schema)
    assert "no text satisfies it" in (c.compile_error() or "")
    with pytest.raises(ConfigError, match=r"constraint: .*no text satisfies it"):
        SpecGuardConfig(constraint={"json_schema": schema})
    # a tool's parameters, embedded in a Lark grammar as a forced call's or a structured
    # output's grammar is
    tool = Constraint.lark(f'start: "<tool_call>" %json {json.dumps(schema)} "</tool_call>"\n')
    assert "embedded JSON schema" in (tool.compile_error() or "")
    assert schema_unsatisfiable(schema) is not None


def test_a_regex_with_no_match_and_a_pattern_with_none_are_refused():
    pytest.importorskip("llguidance")
    assert "no text satisfies it" in (Constraint.regex(r"[^\s\S]").compile_error() or "")
    assert Constraint.regex("a*").compile_error() is None  # the empty text matches
    never = {"type": "string", "pattern": r"[^\s\S]"}
    assert "Unsatisfiable" in (Constraint.json_schema(never).compile_error() or "")
    assert schema_unsatisfiable(never) is not None
    with pytest.raises(ConfigError, match="constraint"):
        SpecGuardConfig(constraint={"regex": r"[^\s\S]"})


def test_embedded_schemas_are_read_out_of_a_lark_grammar():
    grammar = 'start: a | b\na: "x" %json {"type": "object"} "y"\nb: %json  {"enum": [1]}\n'
    assert embedded_schemas(grammar) == [{"type": "object"}, {"enum": [1]}]
    assert embedded_schemas("start: %json nope") == []


def test_a_call_with_an_unsatisfiable_constraint_is_refused_before_it_runs():
    from specguard_integrations.engine.arguments import resolve_constraint

    cfg = SpecGuardConfig()
    with pytest.raises(InvalidInputError, match=r"^constraint: .*no text satisfies it"):
        resolve_constraint(Constraint.json_schema({"$ref": "#"}), cfg)
    ok = Constraint.json_schema({"type": "object"})
    assert resolve_constraint(ok, cfg) is ok


# ---------------------------------------------------------------- the seed and the file
@pytest.mark.parametrize("seed", [2**70, 2**64, -1])
def test_a_seed_outside_what_a_generator_takes_is_named(seed):
    with pytest.raises(ConfigError, match="seed") as info:
        SpecGuardConfig(seed=seed)
    assert isinstance(info.value, ValueError) and info.value.errors()[0]["loc"] == ("seed",)
    with pytest.raises(ConfigError, match="seed"):
        SpecGuardConfig().merged(seed=seed)


def test_the_edges_of_the_seed_range_are_taken_and_generate():
    from specguard_integrations import SpecGuard
    from specguard_integrations.testing import tiny_lm

    assert SpecGuardConfig(seed=0).seed == 0 and SpecGuardConfig(seed=2**64 - 1).seed == 2**64 - 1
    pair = tiny_lm("llama", seed=1, layers=1), tiny_lm("llama", seed=2, layers=1)
    for seed in (0, 2**64 - 1):  # the target's generator is seeded one above the draft's
        cfg = SpecGuardConfig(k=2, max_new_tokens=4, max_step_tokens=2, seed=seed)
        assert SpecGuard(*pair, cfg).generate("hi").output_tokens > 0


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"config": null}', "'config' key holds null"),
        ("[1, 2]", "it holds list"),
        ('{"config": [1]}', "'config' key holds list"),
        ('"k"', "it holds str"),
        ("null", "it holds null"),
        ("{nope", "cannot be read as JSON"),
    ],
)
def test_a_config_file_that_is_not_a_mapping_is_named(tmp_path, content, said):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"^config: ") as info:
        SpecGuardConfig.from_file(path)
    assert said in str(info.value) and isinstance(info.value, ValueError)


def test_a_config_file_round_trips_and_a_missing_one_is_named(tmp_path):
    path = tmp_path / "c.json"
    SpecGuardConfig(k=2, temperature=0.5).to_file(path)
    assert SpecGuardConfig.from_file(path).k == 2
    path.write_text('{"k": 3, "temperature": 0.5}')  # the fields alone
    assert SpecGuardConfig.from_file(path).k == 3
    with pytest.raises(MissingAssetError, match="config: no file"):
        SpecGuardConfig.from_file(tmp_path / "missing.json")


def test_an_empty_api_key_is_refused():
    from specguard_integrations.server.state import Limits

    for empty in ("", "   "):
        with pytest.raises(InvalidInputError, match="--api-key"):
            Limits(api_key=empty)
    assert Limits(api_key="k").api_key == "k" and Limits().api_key is None

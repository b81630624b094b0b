"""Constraints that no text satisfies, found when they are compiled rather than when a
generation under one ends with nothing (or half a value) to show for it.

- `unsatisfiable`: why no JSON value is valid under a JSON schema, by walking it: ``false``
  schemas, an empty ``enum`` or ``anyOf``, bounds that cross (``minItems`` > ``maxItems``,
  ``minLength`` > ``maxLength``, ``minimum`` > ``maximum``, ``minProperties`` >
  ``maxProperties``), a required property or item that cannot be satisfied, and references that
  lead back to themselves with no way out (``{"$ref": "#"}``: a value would have to contain
  itself). Pure Python: it runs where the grammar library is not installed too.
- `empty_language`: a grammar (any kind) whose language is empty from its first character: the
  grammar library allows no byte and no end there (a regex with no match).
- `embedded_schemas`: the JSON schemas a Lark grammar embeds (``%json {...}``: a tool's
  parameters), each checked by `unsatisfiable`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# nodes visited before the walk gives up (and says nothing): a bound for schemas that branch
# through many references
MAX_VISITS = 20_000
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


def unsatisfiable(schema: Any) -> str | None:
    """Why no JSON value satisfies `schema`, or None where one may (or the schema is too large
    to tell). The reason names the place in the schema (``#/properties/next``)."""
    try:
        return _Walk(schema).why(schema, "#", ("#",))
    except _GiveUp:
        return None


class _GiveUp(Exception):
    """The schema is too large (or refers outside itself) to tell."""


class _Walk:
    def __init__(self, root: Any) -> None:
        self.root, self.visits = root, 0

    def why(self, node: Any, at: str, refs: tuple[str, ...]) -> str | None:
        """Why nothing satisfies `node` (at `at`), following references not in `refs`."""
        self.visits += 1
        if self.visits > MAX_VISITS:
            raise _GiveUp
        if node is False:
            return f"{at} is false: nothing is valid there"
        if not isinstance(node, dict):
            return None  # true, or not a schema (the grammar library names that)
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in refs:
                return f"{at} refers back to {ref} with no base case: a value would contain itself"
            found = self.why(self.resolve(ref), ref, (*refs, ref))
            if found is not None:
                return found
        for check in (self.choices, self.values, self.types):
            found = check(node, at, refs)
            if found is not None:
                return found
        return None

    def resolve(self, ref: str) -> Any:
        """The schema a local reference (``#``, ``#/$defs/name``) points at."""
        if not ref.startswith("#"):
            raise _GiveUp  # another document: not ours to read
        node = self.root
        for part in ref[1:].lstrip("/").split("/") if ref not in ("#", "#/") else []:
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise _GiveUp  # a dangling reference: the grammar library names it
        return node

    def choices(self, node: dict[str, Any], at: str, refs: tuple[str, ...]) -> str | None:
        """allOf: every branch; anyOf and oneOf: at least one."""
        for i, sub in enumerate(_list(node.get("allOf"))):
            found = self.why(sub, f"{at}/allOf/{i}", refs)
            if found is not None:
                return found
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if not isinstance(branches, list):
                continue
            reasons = [self.why(sub, f"{at}/{key}/{i}", refs) for i, sub in enumerate(branches)]
            if all(r is not None for r in reasons):
                first = f" ({reasons[0]})" if reasons else ""
                return f"{at}/{key}: no branch can be satisfied{first}"
        return None

    def values(self, node: dict[str, Any], at: str, refs: tuple[str, ...]) -> str | None:
        """enum and const against the schema's types."""
        kinds = _kinds(node)
        if "enum" in node:
            values = _list(node["enum"])
            if not values:
                return f"{at}/enum is empty"
            if not any(_type_of(v) in kinds for v in values):
                return f"{at}/enum: no value is of type {' or '.join(sorted(kinds))}"
        if "const" in node and _type_of(node["const"]) not in kinds:
            return f"{at}/const is not of type {' or '.join(sorted(kinds))}"
        return None

    def types(self, node: dict[str, Any], at: str, refs: tuple[str, ...]) -> str | None:
        """At least one of the schema's types can hold a value under its keywords."""
        kinds = _kinds(node)
        if not kinds:
            return f"{at}/type names no type"
        reasons = [self.one_type(kind, node, at, refs) for kind in sorted(kinds)]
        if all(r is not None for r in reasons):
            return reasons[0]
        return None

    def one_type(
        self, kind: str, node: dict[str, Any], at: str, refs: tuple[str, ...]
    ) -> str | None:
        if kind == "object":
            return self.object(node, at, refs)
        if kind == "array":
            return self.array(node, at, refs)
        if kind == "string":
            return _crossed(node, at, "minLength", "maxLength")
        if kind in ("number", "integer"):
            return _range(node, at, kind == "integer")
        return None

    def object(self, node: dict[str, Any], at: str, refs: tuple[str, ...]) -> str | None:
        crossed = _crossed(node, at, "minProperties", "maxProperties")
        if crossed is not None:
            return crossed
        required = sorted({r for r in _list(node.get("required")) if isinstance(r, str)})
        most = _number(node.get("maxProperties"))
        if most is not None and len(required) > most:
            return f"{at}: {len(required)} required properties, maxProperties {most:g}"
        props = node.get("properties")
        props = props if isinstance(props, dict) else {}
        for name in required:
            for sub, where in _schemas_of(node, props, name, at):
                found = self.why(sub, where, refs)
                if found is not None:  # the reason names its place
                    return f"{at}: required property {name!r} is never valid ({found})"
        return None

    def array(self, node: dict[str, Any], at: str, refs: tuple[str, ...]) -> str | None:
        crossed = _crossed(node, at, "minItems", "maxItems")
        if crossed is not None:
            return crossed
        least = int(_number(node.get("minItems")) or 0)
        prefix = _list(node.get("prefixItems"))
        items = node.get("items", True)
        if isinstance(items, list):  # draft 4-7 tuples
            prefix, items = items, node.get("additionalItems", True)
        for i in range(min(least, len(prefix))):
            found = self.why(prefix[i], f"{at}/prefixItems/{i}", refs)
            if found is not None:
                return found
        if least > len(prefix):
            return self.why(items, f"{at}/items", refs)
        return None


def _schemas_of(
    node: dict[str, Any], props: dict[str, Any], name: str, at: str
) -> list[tuple[Any, str]]:
    """The schemas a property `name` must satisfy, with their places: its own (`properties`)
    and every `patternProperties` entry whose pattern it matches; `additionalProperties` only
    when neither names it. A pattern Python cannot read leaves the property unjudged."""
    out = [(props[name], f"{at}/properties/{name}")] if name in props else []
    patterns = node.get("patternProperties")
    for pattern, sub in (patterns if isinstance(patterns, dict) else {}).items():
        try:
            hit = re.search(pattern, name) is not None
        except (re.error, TypeError):
            return []
        if hit:
            out.append((sub, f"{at}/patternProperties/{pattern}"))
    if not out:
        out.append((node.get("additionalProperties", True), f"{at}/additionalProperties"))
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    """A schema keyword's number, or None where it holds none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _kinds(node: dict[str, Any]) -> set[str]:
    """The types a schema allows (all of them when it names none)."""
    kind = node.get("type", list(_TYPES))
    kinds = {kind} if isinstance(kind, str) else {k for k in _list(kind) if isinstance(k, str)}
    if "number" in kinds:
        kinds.add("integer")
    return kinds


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    names = {float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "object")


def _crossed(node: dict[str, Any], at: str, low: str, high: str) -> str | None:
    lo, hi = _number(node.get(low)), _number(node.get(high))
    if lo is not None and hi is not None and lo > hi:
        return f"{at}: {low} ({lo:g}) is greater than {high} ({hi:g})"
    return None


def _range(node: dict[str, Any], at: str, integer: bool) -> str | None:
    """Whether a number (an integer) lies between the schema's bounds."""
    lo, hi = _number(node.get("minimum")), _number(node.get("maximum"))
    xlo, xhi = _number(node.get("exclusiveMinimum")), _number(node.get("exclusiveMaximum"))
    lo, hi = (-math.inf if lo is None else lo), (math.inf if hi is None else hi)
    open_lo, open_hi = xlo is not None and xlo >= lo, xhi is not None and xhi <= hi
    lo, hi = (
        (xlo if xlo is not None and open_lo else lo),
        (xhi if xhi is not None and open_hi else hi),
    )
    if integer and math.isfinite(lo) and math.isfinite(hi):
        first = math.floor(lo) + 1 if open_lo else math.ceil(lo)
        last = math.ceil(hi) - 1 if open_hi else math.floor(hi)
        if first > last:
            return f"{at}: no integer lies between the bounds ({lo}, {hi})"
    if lo > hi or (lo == hi and (open_lo or open_hi)):
        return f"{at}: no number lies between the bounds ({lo}, {hi})"
    return None


def embedded_schemas(grammar: str) -> list[Any]:
    """The JSON schemas a Lark grammar embeds with ``%json {...}``."""
    decoder, found, at = json.JSONDecoder(), [], grammar.find("%json")
    while at >= 0:
        start = at + len("%json")
        while start < len(grammar) and grammar[start].isspace():
            start += 1
        try:
            value, end = decoder.raw_decode(grammar, start)
        except ValueError:  # not a schema here: the grammar library names it
            end = start
        else:
            found.append(value)
        at = grammar.find("%json", max(end, start))
    return found


def empty_language(kind: str, source: str) -> str | None:
    """ "no text matches it" when the grammar library, on a grammar that compiles, allows no
    character and no end at the start; None otherwise, and where the library is missing."""
    import importlib.util

    if importlib.util.find_spec("llguidance") is None:
        return None
    from .library import byte_tokenizer, core, grammar_of

    matcher = core().LLMatcher(byte_tokenizer(), grammar_of(kind, source, True), log_level=0)
    if matcher.is_error() or matcher.is_accepting():
        return None  # an error is the compiler's to name
    mask = matcher.compute_bitmask()  # (257 bits): each byte, then the end
    # with no byte allowed, the matcher stops (an error) and its mask allows only the end
    empty = matcher.is_error() or not any(mask[:32])
    return "the grammar allows no first character, and no empty text" if empty else None


def schema_unsatisfiable(schema: Any) -> str | None:
    """Why no JSON value satisfies `schema`: by its structure (`unsatisfiable`), else by the
    grammar library's own verdict where it finds the schema unsatisfiable (an empty pattern) or
    its language empty; None where a value may, and for a schema the library cannot compile for
    another reason (that error is raised where its grammar is built). What `specguard serve`
    asks of a ``response_format`` schema and of each tool's parameters."""
    import importlib.util

    why = unsatisfiable(schema)
    if why is not None or importlib.util.find_spec("llguidance") is None:
        return why
    from .library import core

    m = core().LLMatcher
    try:
        error = m.validate_grammar(m.grammar_from_json_schema(json.dumps(schema)))
    except ValueError as err:
        error = str(err)
    if error and error.strip():
        first = error.strip().splitlines()[0]
        return first if "unsatisfiable" in first.lower() else None
    return empty_language("json_schema", json.dumps(schema))

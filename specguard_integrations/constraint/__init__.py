"""What a constrained generation must match: a JSON schema, a regular expression or a Lark
grammar, over the whole generated text (every step).

The method does not change under a constraint: each of the k draft candidates is sampled under
its own copy of the grammar state, the selected step is scored on the tokens actually sampled,
an accepted step moves the draft's state on, a rejected one leaves it where the step began, and
the target writes its fallback step under its own state for its own tokenizer, which follows
every accepted step. A local backend enforces the constraint with a token mask
(`backends/local/grammar.py`); a remote model's steps are checked against it (the step
that starts the text is also asked for in the engine's own field; no field continues a
prefix). Asking for no
constraint costs nothing: the samplers take their usual path.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidInputError

Kind = Literal["json_schema", "regex", "lark"]


@functools.lru_cache(maxsize=256)
def _compile_error(constraint: Constraint) -> str | None:
    """Once per constraint: every call that names one checks it."""
    from .satisfiable import empty_language

    why = constraint._unsatisfiable()
    if why is None:
        error = constraint._library_error()
        if error is not None:
            return error
        why = empty_language(constraint.kind, constraint.text_source or constraint.source)
    return None if why is None else f"no text satisfies it: {why}"


@dataclass(frozen=True)
class Constraint:
    """A grammar for the generated text. Build one with `json_schema`, `regex` or `lark`."""

    kind: Kind
    source: str  # the schema as JSON text, the pattern, or the grammar
    # a grammar that names a model's tokens (``<[id]>``) has a twin with them as text, for
    # checking text another writer produced and for a model whose vocabulary differs
    text_source: str | None = None
    tokens: tuple[tuple[str, int], ...] = ()  # the tokens it names: (text, id)

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str) -> Constraint:
        """Text that is one JSON value valid under `schema` (a dict or its JSON text)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as err:
                raise InvalidInputError(f"json_schema: not JSON: {err}") from None
        if not isinstance(schema, dict):
            raise InvalidInputError(
                f"json_schema: a JSON object was expected, got {type(schema).__name__}"
            )
        return cls("json_schema", json.dumps(schema))  # key order kept: it is the output's

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Text that matches `pattern` whole."""
        try:
            re.compile(pattern)
        except re.error as err:
            raise InvalidInputError(f"regex: {err}") from None
        return cls("regex", pattern)

    @classmethod
    def lark(
        cls,
        grammar: str,
        text_twin: str | None = None,
        tokens: tuple[tuple[str, int], ...] = (),
    ) -> Constraint:
        """Text in the language of a Lark grammar (llguidance's dialect, with ``%json {...}``
        for an embedded JSON schema). A grammar that names tokens of one model (``<[id]>``)
        gives `text_twin`, the same language with those tokens as text, and the `tokens` it
        names as (text, id): a model whose vocabulary has other ids samples under the twin."""
        if not isinstance(grammar, str) or not grammar.strip():
            raise InvalidInputError("lark: the grammar is empty")
        return cls("lark", grammar, text_twin, tuple(tokens))

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Constraint:
        """The constraint a config names: ``{"json_schema": {...}}``, ``{"regex": "..."}`` or
        ``{"lark": "..."}``."""
        if not isinstance(spec, dict) or len(spec) != 1:
            raise InvalidInputError("constraint: give exactly one of json_schema, regex or lark")
        ((kind, source),) = spec.items()
        if kind == "json_schema":
            return cls.json_schema(source)
        if kind in ("regex", "lark") and isinstance(source, str):
            return cls.regex(source) if kind == "regex" else cls.lark(source)
        raise InvalidInputError(
            f"constraint: {kind!r} is not json_schema (an object), regex or lark (strings)"
        )

    def spec(self) -> dict[str, Any]:
        """The constraint as `SpecGuardConfig.constraint` holds it (`from_spec` reads it)."""
        if self.tokens:
            raise InvalidInputError("a grammar that names one model's tokens has no config form")
        return {self.kind: self.schema if self.kind == "json_schema" else self.source}

    def compile_error(self) -> str | None:
        """Why this constraint cannot be used, or None: no text satisfies it (`satisfiable`:
        a schema whose references never end, an empty enum, bounds that cross, a regex with no
        match), or the grammar library cannot compile it (a look-behind in a regex, a schema
        type that does not exist, Lark syntax). Where the library (the ``[grammar]`` extra) is
        not installed, only the JSON schemas are checked, by their structure."""
        return _compile_error(self)

    def _library_error(self) -> str | None:
        """What the grammar library says of the constraint (None where it is missing)."""
        import importlib.util

        if importlib.util.find_spec("llguidance") is None:
            return None
        import llguidance

        m: Any = llguidance.LLMatcher
        build: Any = {
            "json_schema": m.grammar_from_json_schema,
            "regex": m.grammar_from_regex,
            "lark": m.grammar_from_lark,
        }[self.kind]
        try:
            error = m.validate_grammar(build(self.text_source or self.source))
        except ValueError as err:
            error = str(err)
        if not error or not error.strip():
            return None
        lines = [line.strip() for line in error.strip().splitlines()]
        detail = [line for line in lines[1:] if line.startswith("error:")]
        return " ".join(lines[:1] + detail)

    def _unsatisfiable(self) -> str | None:
        """Why no text satisfies the constraint, as far as the structure of its JSON schema
        (or of those a Lark grammar embeds: a tool's parameters) tells."""
        from .satisfiable import embedded_schemas, unsatisfiable

        if self.kind == "json_schema":
            return unsatisfiable(self.schema)
        if self.kind == "lark":
            for schema in embedded_schemas(self.text_source or self.source):
                why = unsatisfiable(schema)
                if why is not None:
                    return f"its embedded JSON schema (%json): {why}"
        return None

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema (for ``json_schema`` constraints)."""
        if self.kind != "json_schema":
            raise InvalidInputError(f"a {self.kind} constraint has no JSON schema")
        return dict(json.loads(self.source))

    def check(self, text: str) -> str | None:
        """Why `text` does not satisfy the constraint, or None when it does (JSON schemas and
        regexes; a Lark grammar is checked by a matcher, where one is at hand)."""
        if self.kind == "regex":
            return None if re.fullmatch(self.source, text) else "does not match the pattern"
        if self.kind == "json_schema":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                return f"not JSON: {err}"
            from .library import schema_violation

            why = schema_violation(self.schema, value)
            return None if why is None else f"not valid under the schema: {why}"
        return None

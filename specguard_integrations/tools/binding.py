"""The tools a chat call binds: their checks (a name a call can write, a JSON-schema object as
parameters, no name twice), the tool a call must use (`tool_choice`), and the calls a reply
made kept only where they call a bound tool with arguments its schema takes. Every chat surface
(LangChain, LlamaIndex, the server) goes through these."""

from __future__ import annotations

import json
import re
from typing import Any

from ..constraint.library import schema_violation
from ..constraint.satisfiable import schema_unsatisfiable
from ..errors import InvalidInputError, MissingDependencyError
from .base import ParsedReply


def openai_tool_name(tool: dict[str, Any]) -> str:
    fn = tool.get("function", tool)
    return str(fn["name"])


# characters a tool name cannot hold: the name is written as it is into the call's JSON and
# matched back by the parser (OpenAI allows letters, digits, "_" and "-")
_NAME_BREAKERS = re.compile(r'[\s"\\\x00-\x1f\x7f]')


def check_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools in the OpenAI shape, each with a name a call can write and a JSON-schema object as
    parameters; a tool without parameters gets an empty object schema (copies: the caller's
    dicts are left as they are)."""
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidInputError(f"tools[{i}]: a tool needs a function with a name")
        if _NAME_BREAKERS.search(fn["name"]):
            raise InvalidInputError(
                f"tools[{i}]: name {fn['name']!r} holds whitespace, a quote, a backslash or a"
                " control character; a tool name is written as it is into the call"
            )
        params = fn.get("parameters")
        params = {"type": "object", "properties": {}} if params is None else params
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise InvalidInputError(
                f"tools[{i}] ({fn['name']}): parameters must be a JSON schema object, got"
                f" {params!r}"
            )
        if not isinstance(params.get("properties", {}), dict):
            raise InvalidInputError(
                f"tools[{i}] ({fn['name']}): parameters.properties must be an object"
            )
        if (why := schema_error(params)) is not None:
            raise InvalidInputError(f"tools[{i}] ({fn['name']}): parameters: {why}")
        if (why := schema_unsatisfiable(params)) is not None:  # no call to it could be valid
            raise InvalidInputError(
                f"tools[{i}] ({fn['name']}): parameters: no arguments satisfy the schema: {why}"
            )
        fn = {**fn, "parameters": {"properties": {}, **params}}
        out.append({**tool, "function": fn} if "function" in tool else fn)
    return out


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a JSON schema (by jsonschema's metaschema, where it is installed)."""
    try:
        import jsonschema
    except ImportError:
        return None
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as err:
        return f"not a JSON schema: {err.message}"
    return None


def check_tool_names(tools: list[dict[str, Any]]) -> None:
    """Every tool of a call has its own name (a call names the tool it calls). Binding may
    repeat one (LangChain's binding accepts it); a call with such tools is refused."""
    names = [openai_tool_name(t) for t in tools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInputError(
            f"tools: each tool needs its own name; {', '.join(map(repr, twice))} is given twice"
        )


def keep_bound_calls(parsed: ParsedReply, tools: list[dict[str, Any]]) -> ParsedReply:
    """Calls to a tool that was not bound, or with arguments its parameters' schema refuses,
    move to the invalid calls with the error named (a grammar-constrained call always passes;
    a call written unconstrained, or by a remote target, may not)."""
    schemas = {openai_tool_name(t): t.get("function", t).get("parameters") for t in tools}
    calls: list[dict[str, Any]] = []
    invalid = list(parsed.invalid_tool_calls)
    for c in parsed.tool_calls:
        why: str | None
        if c["name"] not in schemas:
            why = f"tool {c['name']!r} is not bound (bound: {sorted(schemas)})"
        else:
            why = _args_problem(schemas[c["name"]], c["args"])
        if why is None:
            calls.append(c)
        else:
            invalid.append(
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "error": why}
            )
    return ParsedReply(parsed.content, calls, invalid)


def _args_problem(schema: dict[str, Any] | None, args: Any) -> str | None:
    """Why a call's arguments do not fit its tool's parameters: by the whole JSON schema with
    the [grammar] extra's jsonschema, else by the required arguments alone."""
    if not schema:
        return None
    try:
        why = schema_violation(schema, args)
    except MissingDependencyError:
        given = args if isinstance(args, dict) else {}
        missing = [k for k in schema.get("required", []) if k not in given]
        why = f"missing required argument(s) {', '.join(map(repr, missing))}" if missing else None
    return None if why is None else f"arguments do not fit the tool's parameters: {why}"


def normalise_tool_choice(tool_choice: Any, tools: list[dict[str, Any]]) -> str | None:
    """The tool a call must use: a name, "" for any tool, or None when the model decides."""
    if tool_choice in (None, "auto", "none", False):
        return None
    names = [openai_tool_name(t) for t in tools]
    if tool_choice in ("any", "required", True):
        return names[0] if len(names) == 1 else ""
    if isinstance(tool_choice, dict):
        name = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
    else:
        name = str(tool_choice)
    if name not in names:
        raise InvalidInputError(f"tool_choice names {name!r}, which is not a bound tool ({names})")
    return str(name)

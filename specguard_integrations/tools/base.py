"""What a tool-call format is, and the registry every format joins as it is defined.

A format is one class holding all of one family's facts: the markers that open and close a
call block, the text before a tool's name and between the name and its arguments, how several
calls are written in one reply, how a reply is parsed and calls are written as text, and how the
format is recognised in a chat template's rendering. Subclasses register themselves by their
`name` (vLLM's tool-parser names); `SpecGuardConfig.tool_call_format` accepts exactly the names
registered. A format instance may carry prefixes read off a template (`templates.detect`).

Several calls in one reply are written
``name_prefix N1 args_prefix A1 args_suffix call_end (separator next_prefix Nk args_prefix Ak
args_suffix call_end)* block_end``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ..errors import InvalidInputError

# placeholders written into a rendered call to read a template's prefixes around them
NAME_MARK = "SGFNNAMEMARK"
ARG_MARK = "SGARGMARK"

_REGISTRY: dict[str, type[ToolCallFormat]] = {}


@dataclass
class ParsedReply:
    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # name, args, id
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)  # + error


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parsed_call(name: Any, args: Any) -> dict[str, Any]:
    """A parsed call, or `InvalidInputError` naming what is malformed."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError('a tool call needs a "name" string')
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"tool call arguments are not JSON: {err}") from None
    if not isinstance(args, dict):
        raise InvalidInputError("tool call arguments must be a JSON object")
    return {"name": name, "args": args, "id": new_call_id()}


def invalid_call(raw: str, err: Exception, name: str | None = None) -> dict[str, Any]:
    """An invalid call as LangChain's `invalid_tool_calls` hold it, with the error named."""
    found = re.search(r'"name"\s*:\s*"([^"]*)"', raw)
    return {
        "name": name or (found.group(1) if found else None),
        "args": raw,
        "id": new_call_id(),
        "error": f"malformed tool call: {err}",
    }


def json_values(text: str) -> tuple[list[tuple[int, int, Any]], str | None]:
    """Top-level JSON values in `text` (start, end, value), and the first decode error."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, Any]] = []
    pos, error = 0, None
    while True:
        start = min((i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0), default=-1)
        if start < 0:
            return found, error
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as err:
            return found, error or str(err)
        found.append((start, end, value))
        pos = end


@dataclass(frozen=True)
class ToolCallFormat:
    """How a model family writes tool calls (see the module docstring for the layout).

    Class facts (the same for every template of the family): `name`, `opener` / `closer` of a
    call block (`closer` empty: the block runs to the end of the turn; `opener` empty: a reply
    that starts with a JSON object is a call), `block_per_call` (each call in its own block, as
    hermes writes them, or all calls in one) and `detect_rank` (where `detects` is tried among
    the formats; lower first).

    Instance fields, which a template may refine (`templates.detect`): `name_prefix` from the
    start of the block to the first tool's name, `args_prefix` from a name to its arguments,
    `args_suffix` closing the arguments, `call_end` closing one call, `separator` and
    `next_prefix` starting a later call, and `block_end` closing the block.
    `history_content_none` / `history_json_args`: how the template wants an assistant turn that
    made calls (content None, arguments as a JSON string).
    """

    name: ClassVar[str] = ""
    opener: ClassVar[str] = ""
    closer: ClassVar[str] = ""
    block_per_call: ClassVar[bool] = False
    detect_rank: ClassVar[int] = 50

    name_prefix: str = ""
    args_prefix: str = ""
    args_suffix: str = ""
    call_end: str = ""
    block_end: str = ""
    separator: str = ""
    next_prefix: str | None = None  # None: `name_prefix` again
    # read off a template that renders calls: how it wants an earlier turn that made calls
    template_calls: bool = False
    history_content_none: bool = False
    history_json_args: bool = False
    # a tokenizer with a transformers response template parses replies itself
    response_parser: Any = field(default=None, compare=False, repr=False)

    def __init_subclass__(cls, *, replace: bool = False, **kwargs: Any) -> None:
        """A subclass that sets `name` joins the registry under it (a second class under the
        same name only with ``replace=True``)."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None or name == "":
            return
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise InvalidInputError(
                f"tool-call format {cls.__qualname__}: name must be a non-empty string without"
                f" surrounding spaces, got {name!r}"
            )
        known = _REGISTRY.get(name)
        same = known is not None and _where(known) == _where(cls)  # the same class, reloaded
        if known is not None and not same and not replace:
            raise InvalidInputError(
                f"tool-call format {name!r} is already registered by {_where(known)}"
            )
        _REGISTRY[name] = cls

    # ---------------------------------------------------------------- text
    @property
    def end(self) -> str:
        """The markers after the last call's arguments: ``call_end + block_end``."""
        return self.call_end + self.block_end

    @property
    def later_prefix(self) -> str:
        """The text that opens a call after the first (after `separator`)."""
        return self.name_prefix if self.next_prefix is None else self.next_prefix

    def forced_prefix(self, name: str | None) -> str:
        """Text that commits the reply to a tool call (to `name`, or to any tool).

        Trailing spaces are left for the model to write: BPE vocabularies merge a space with the
        next character (`` {"``), so a prompt ending in a bare space is a token sequence the
        model never saw in training.
        """
        return (self.name_prefix + (name + self.args_prefix if name else "")).rstrip(" ")

    def call_text(self, name: str, args: dict[str, Any], *, first: bool) -> str:
        """One call as the model writes it, without the block's end."""
        head = self.name_prefix if first else self.separator + self.later_prefix
        return head + name + self.args_prefix + json.dumps(args) + self.args_suffix + self.call_end

    def render_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        """Calls written as the model writes them (for templates that cannot render them)."""
        body = "".join(self.call_text(n, a, first=i == 0) for i, (n, a) in enumerate(calls))
        return body + self.block_end

    def instructions(self, tools: list[dict[str, Any]]) -> str:
        """The tools and the call format, for templates that cannot render tools."""
        example = self.render_calls([("TOOL_NAME", {"ARGUMENT": "VALUE"})])
        return (
            "You can call these tools:\n"
            + "\n".join(json.dumps(t.get("function", t)) for t in tools)
            + f"\nTo call a tool, reply with exactly:\n{example}"
        )

    def history_call(self, call_id: Any, name: str, args: Any) -> dict[str, Any]:
        """One call of an earlier assistant turn in the shape the template renders."""
        if self.history_json_args and not isinstance(args, str):
            args = json.dumps(args)
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}

    # ---------------------------------------------------------------- reading
    def parse(self, text: str) -> ParsedReply:
        """The reply split into content, valid calls and invalid calls (with their errors): by
        the tokenizer's response template where it has one (`tokenizer.parse_response`), else
        by the format's own rules (`parse_text`)."""
        if self.response_parser is None:
            return self.parse_text(text)
        try:
            msg = self.response_parser.parse_response(text, prefix="")
        except Exception:  # a reply the template does not describe: read it by the format
            return self.parse_text(text)
        calls, invalid = [], []
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function", tc)
            try:
                calls.append(parsed_call(fn.get("name"), fn.get("arguments", {})))
            except ValueError as err:
                invalid.append(invalid_call(json.dumps(fn, default=str), err))
        return ParsedReply(str(msg.get("content") or "").strip(), calls, invalid)

    def parse_text(self, text: str) -> ParsedReply:
        """The format's own reading of a reply."""
        raise NotImplementedError

    @classmethod
    def detects(cls, rendered: str, at: int) -> bool:
        """Whether a template's rendering of one call, whose tool name starts at `at`, is
        written in this format."""
        return bool(cls.opener) and cls.opener in rendered[:at]


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain_class_fields(cls: type[ToolCallFormat]) -> list[str]:
    """Fields a subclass set as plain class attributes: without ``@dataclass`` and an
    annotation they never reach an instance, which keeps the inherited default."""
    made = cls()
    return [f.name for f in fields(cls) if getattr(cls, f.name, None) != getattr(made, f.name)]


def registered() -> dict[str, type[ToolCallFormat]]:
    """Every registered format by name (the built-in ones first)."""
    return dict(_REGISTRY)


def unregister(name: str) -> None:
    """Remove a format added at run time (tests)."""
    _REGISTRY.pop(name, None)


def format_by_name(name: str) -> ToolCallFormat:
    """The registered format `name` with its default prefixes; `InvalidInputError` naming the
    registered ones otherwise."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise InvalidInputError(
            f"tool_call_format: unknown value {name!r}; use one of {', '.join(_REGISTRY)}"
        ) from None
    except TypeError:  # a lookup with a name that is not a string
        raise InvalidInputError(f"tool_call_format: {name!r} is not a format name") from None
    if plain := _plain_class_fields(cls):
        raise InvalidInputError(
            f"tool-call format {name!r} ({_where(cls)}) sets {', '.join(plain)} as plain class"
            " attributes, which its instances never see: decorate the class with"
            " @dataclass(frozen=True) and annotate them (e.g. `name_prefix: str = ...`)"
        )
    return cls()

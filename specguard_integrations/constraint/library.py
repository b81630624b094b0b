"""The grammar library (llguidance, the one llama.cpp and vLLM use; the ``[grammar]`` extra):
loading it with an error that names the extra, a constraint's grammar in its language, and a
tokenizer of single bytes with which a grammar reads any text.
Local samplers (`backends/local/grammar.py`) and the text checker (`text.py`) both start here."""

from __future__ import annotations

import functools
from typing import Any

from ..errors import MissingDependencyError

# JSON laid out as `json.dumps` writes it (what models see in training), one way only
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def llguidance() -> Any:
    """The llguidance module (with its `hf` and `torch` parts), or `MissingDependencyError`
    naming the extra to install."""
    try:
        import llguidance.hf
        import llguidance.torch  # noqa: F401 - imported for its attribute of the module
    except ImportError as err:
        raise _missing() from err
    return core()


def core() -> Any:
    """The llguidance module alone (grammars and matchers; torch is not imported)."""
    try:
        import llguidance
    except ImportError as err:
        raise _missing() from err
    return llguidance


def _missing() -> MissingDependencyError:
    return MissingDependencyError(
        "constrained generation needs llguidance (the [grammar] extra):"
        " pip install 'specguard-integrations[grammar]'"
    )


def schema_violation(schema: dict[str, Any], value: Any) -> str | None:
    """Why `value` is not valid under the JSON `schema` (its first error, by jsonschema, the
    [grammar] extra), or None when it is; `MissingDependencyError` naming the extra without
    it."""
    try:
        import jsonschema
    except ImportError as err:
        raise MissingDependencyError(
            "checking values against a JSON schema needs jsonschema (the [grammar] extra):"
            " pip install 'specguard-integrations[grammar]'"
        ) from err
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=str)
    if not errors:
        return None
    where = "/".join(str(p) for p in errors[0].absolute_path)
    return f"{where + ': ' if where else ''}{errors[0].message}"


@functools.lru_cache(maxsize=16)
def grammar_of(kind: str, source: str, flexible: bool = False) -> str:
    """The llguidance grammar of a constraint; `flexible` JSON takes any whitespace (to check
    text a model wrote unconstrained)."""
    llg = core()
    if kind == "json_schema":
        layout = {"whitespace_flexible": True} if flexible else JSON_LAYOUT
        return str(llg.LLMatcher.grammar_from_json_schema(source, defaults=layout))
    if kind == "regex":
        return str(llg.LLMatcher.grammar_from_regex(source))
    return str(llg.LLMatcher.grammar_from_lark(source))


def first_line(error: str) -> str:
    """llguidance's error without the parser state it appends."""
    return error.strip().splitlines()[0] if error.strip() else ""


class _Bytes:
    """A tokenizer of single bytes (and an EOS): lets a grammar read any text."""

    def __init__(self) -> None:
        self.tokens = [bytes([i]) for i in range(256)] + [b""]
        self.special_token_ids = [256]
        self.eos_token_id = 256
        self.bos_token_id = None

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else text)


@functools.lru_cache(maxsize=1)
def byte_tokenizer() -> Any:
    """A tokenizer of single bytes (and an EOS, id 256): a grammar reads any text with it."""
    llg = core()
    return llg.LLTokenizer(llg.TokenizerWrapper(_Bytes()), n_vocab=257, eos_token=256)

"""The grammar library (llguidance, the one llama.cpp and vLLM use; the ``[grammar]`` extra):
loading it with an error that names the extra, and a constraint's grammar in its language.
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
        import llguidance
        import llguidance.hf
        import llguidance.torch
    except ImportError as err:
        raise MissingDependencyError(
            "constrained generation needs llguidance (the [grammar] extra):"
            " pip install 'specguard-integrations[grammar]'"
        ) from err
    return llguidance


@functools.lru_cache(maxsize=16)
def grammar_of(kind: str, source: str, flexible: bool = False) -> str:
    """The llguidance grammar of a constraint; `flexible` JSON takes any whitespace (to check
    text a model wrote unconstrained)."""
    llg = llguidance()
    if kind == "json_schema":
        layout = {"whitespace_flexible": True} if flexible else JSON_LAYOUT
        return str(llg.LLMatcher.grammar_from_json_schema(source, defaults=layout))
    if kind == "regex":
        return str(llg.LLMatcher.grammar_from_regex(source))
    return str(llg.LLMatcher.grammar_from_lark(source))


def first_line(error: str) -> str:
    """llguidance's error without the parser state it appends."""
    return error.strip().splitlines()[0] if error.strip() else ""

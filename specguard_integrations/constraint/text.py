"""A constraint checked on text another writer produced (a remote model's steps), byte by byte:
nothing here depends on a model, so local and remote backends alike may use it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InvalidInputError
from .library import byte_tokenizer, core, first_line, grammar_of

if TYPE_CHECKING:
    from . import Constraint


class TextChecker:
    """A constraint checked on text another writer produced (a remote model's steps): each
    step must keep the text a prefix of the grammar's language."""

    def __init__(self, constraint: Constraint) -> None:
        llg = core()
        source = constraint.text_source or constraint.source
        grammar = grammar_of(constraint.kind, source, flexible=True)
        self.inner = llg.LLMatcher(byte_tokenizer(), grammar, log_level=0)
        if self.inner.is_error():
            raise InvalidInputError(
                f"the {constraint.kind} constraint does not compile: {self.inner.get_error()}"
            )

    def follow(self, text: str) -> str | None:
        """Take `text`; why it breaks the grammar, or None when it does not. Whitespace after a
        complete text (a step boundary put back after it) is not the grammar's to judge."""
        data = list(text.encode("utf-8"))
        fits = self.inner.validate_tokens(data) if data else 0
        if fits and not self.inner.consume_tokens(data[:fits]):
            return first_line(self.inner.get_error()) or "the text leaves the grammar"
        rest = bytes(data[fits:])
        if rest and not (rest.isspace() and self.inner.is_accepting()):
            return f"the text leaves the grammar at {rest[:40].decode('utf-8', 'replace')!r}"
        return None

    @property
    def complete(self) -> bool:
        return bool(self.inner.is_accepting())

    def copy(self) -> TextChecker:
        twin = TextChecker.__new__(TextChecker)
        twin.inner = self.inner.deep_copy()
        return twin

"""A `Constraint` enforced on a local model with a token mask (llguidance, the library llama.cpp
and vLLM use: no Python dependencies; docs/structured-output.md has the measured costs).

A `Matcher` is one grammar state for one model's tokenizer. It works on bytes, so any
tokenization of valid text is accepted: the target's matcher follows text the draft wrote.
Each of k candidate rows forks its own; a rejected step simply leaves the session's matcher
where the step began.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ...constraint import Constraint
from ...errors import InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    import torch

    from .model import LocalCausalLM


# JSON laid out as `json.dumps` writes it (what models see in training), one way only
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class GrammarUnavailable(MissingDependencyError):
    """llguidance is not installed (the ``[grammar]`` extra)."""


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
        import llguidance.torch
    except ImportError as err:
        raise GrammarUnavailable(
            "constrained generation needs llguidance (the [grammar] extra):"
            " pip install 'specguard-integrations[grammar]'"
        ) from err
    return llguidance


@functools.lru_cache(maxsize=16)
def _grammar(kind: str, source: str, flexible: bool = False) -> str:
    """The llguidance grammar of a constraint; `flexible` JSON takes any whitespace (to check
    text a model wrote unconstrained)."""
    llg = _llguidance()
    if kind == "json_schema":
        layout = {"whitespace_flexible": True} if flexible else JSON_LAYOUT
        return str(llg.LLMatcher.grammar_from_json_schema(source, defaults=layout))
    if kind == "regex":
        return str(llg.LLMatcher.grammar_from_regex(source))
    return str(llg.LLMatcher.grammar_from_lark(source))


def ll_tokenizer(lm: LocalCausalLM) -> Any:
    """The model's tokenizer as llguidance sees it (built once per model): read from the fast
    tokenizer's own description where llguidance knows its decoder, else from each token's
    text."""
    cached = lm.__dict__.get("_ll_tokenizer")
    if cached is None:
        llg = _llguidance()
        vocab = int(lm.model.get_input_embeddings().weight.shape[0])
        eos = sorted(lm.eos_ids)
        try:
            cached = llg.hf.from_tokenizer(lm.tokenizer, n_vocab=vocab, eos_token=eos)
        except ValueError:  # a decoder llguidance cannot read (e.g. Fuse)
            wrapped = llg.TokenizerWrapper(_TokenTexts(lm))
            cached = llg.LLTokenizer(wrapped, n_vocab=vocab, eos_token=eos)
        lm.__dict__["_ll_tokenizer"] = cached
    return cached


class _TokenTexts:
    """A tokenizer described by the UTF-8 bytes of each token's text (special tokens empty)."""

    def __init__(self, lm: LocalCausalLM) -> None:
        tok = lm.tokenizer
        special = set(tok.all_special_ids) | set(lm.eos_ids)
        size = len(tok)
        self.tokens = [
            b"" if i in special else str(tok.decode([i])).encode("utf-8") for i in range(size)
        ]
        self.special_token_ids = sorted(special)
        self.eos_token_id = min(lm.eos_ids) if lm.eos_ids else tok.eos_token_id
        self.bos_token_id = tok.bos_token_id
        self._encode = lm.encode_continuation

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return self._encode(text)


def _has_tokens(lm: LocalCausalLM, tokens: tuple[tuple[str, int], ...]) -> bool:
    """Whether `lm`'s vocabulary has each (text, id) a grammar names."""
    ids = [lm.tokenizer.convert_tokens_to_ids(text) for text, _ in tokens]
    return ids == [i for _, i in tokens]


def _first_line(error: str) -> str:
    """llguidance's error without the parser state it appends."""
    return error.strip().splitlines()[0] if error.strip() else ""


class Matcher:
    """One grammar state: which tokens may come next, and the tokens taken so far."""

    def __init__(self, inner: Any, vocab: int) -> None:
        self.inner, self.vocab = inner, vocab

    @classmethod
    def start(cls, lm: LocalCausalLM, constraint: Constraint) -> Matcher:
        """A fresh state for `lm`; `ValueError` naming the problem for a grammar that does not
        compile."""
        llg = _llguidance()
        tok = ll_tokenizer(lm)
        source = constraint.source
        if constraint.tokens and not _has_tokens(lm, constraint.tokens):
            source = constraint.text_source or source  # another vocabulary: the text twin
        inner = llg.LLMatcher(tok, _grammar(constraint.kind, source), log_level=0)
        if inner.is_error():
            raise InvalidInputError(
                f"the {constraint.kind} constraint does not compile: {inner.get_error()}"
            )
        return cls(inner, int(tok.vocab_size))

    def fork(self) -> Matcher:
        return Matcher(self.inner.deep_copy(), self.vocab)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` `(V',)` with every token the grammar forbids next set to -inf (in place)."""
        import llguidance.torch as llt
        import torch

        bits = llt.allocate_token_bitmask(1, self.vocab)  # (1, ceil(V / 32)) int32
        llt.fill_next_token_bitmask(self.inner, bits, 0)
        shifts = torch.arange(32, dtype=torch.int32)
        allowed = ((bits[0].unsqueeze(-1) >> shifts) & 1).flatten().bool()  # (32 * words,)
        width = min(logits.shape[-1], self.vocab)
        forbid = ~allowed[:width].to(logits.device)
        logits[..., :width] = logits[..., :width].masked_fill(forbid, -torch.inf)
        if logits.shape[-1] > width:  # padding rows of the embedding are never text
            logits[..., width:] = -torch.inf
        return logits

    def take(self, token: int) -> None:
        """Move on by a sampled token; `ValueError` if the grammar refuses it."""
        if not self.inner.consume_token(int(token)):
            why = _first_line(self.inner.get_error())
            raise InvalidInputError(f"the constraint refused token {token}: {why}")

    def follow(self, tokens: list[int]) -> None:
        """Move on by tokens another writer chose (text valid under the grammar)."""
        if tokens and not self.inner.consume_tokens([int(t) for t in tokens]):
            why = _first_line(self.inner.get_error())
            raise InvalidInputError(f"the accepted text breaks the constraint: {why}")

    def back(self, n: int) -> None:
        """Forget the last `n` tokens taken."""
        if n > 0 and not self.inner.rollback(n):
            raise InvalidInputError(f"cannot roll the constraint back {n} tokens")

    @property
    def done(self) -> bool:
        """The grammar is complete and takes nothing more (only EOS)."""
        return bool(self.inner.is_stopped())

    @property
    def accepting(self) -> bool:
        return bool(self.inner.is_accepting())


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
def _byte_tokenizer() -> Any:
    llg = _llguidance()
    return llg.LLTokenizer(llg.TokenizerWrapper(_Bytes()), n_vocab=257, eos_token=256)


class TextChecker:
    """A constraint checked on text another writer produced (a remote model's steps): each
    step must keep the text a prefix of the grammar's language."""

    def __init__(self, constraint: Constraint) -> None:
        llg = _llguidance()
        source = constraint.text_source or constraint.source
        grammar = _grammar(constraint.kind, source, flexible=True)
        self.inner = llg.LLMatcher(_byte_tokenizer(), grammar, log_level=0)
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
            return _first_line(self.inner.get_error()) or "the text leaves the grammar"
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

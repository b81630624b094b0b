"""A `Constraint` enforced on a local model with a token mask (llguidance, the library llama.cpp
and vLLM use: no Python dependencies; docs/structured-output.md has the measured costs).

A `Matcher` is one grammar state for one model's tokenizer. It works on bytes, so any
tokenization of valid text is accepted: the target's matcher follows text the draft wrote.
Each of k candidate rows forks its own; a rejected step simply leaves the session's matcher
where the step began.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from ...constraint import Constraint
from ...constraint.library import first_line, grammar_of, llguidance
from ...errors import InvalidInputError

if TYPE_CHECKING:
    import torch

    from .model import LocalCausalLM


# each model's tokenizer as llguidance sees it, built once and dropped with the model
_LL_TOKENIZERS: weakref.WeakKeyDictionary[LocalCausalLM, Any] = weakref.WeakKeyDictionary()
_LL_LOCK = threading.Lock()


def ll_tokenizer(lm: LocalCausalLM) -> Any:
    """The model's tokenizer as llguidance sees it (built once per model): read from the fast
    tokenizer's own description where llguidance knows its decoder, else from each token's
    text."""
    with _LL_LOCK:
        cached = _LL_TOKENIZERS.get(lm)
    if cached is not None:
        return cached
    llg = llguidance()
    vocab = int(lm.model.get_input_embeddings().weight.shape[0])
    eos = sorted(lm.eos_ids)
    try:
        cached = llg.hf.from_tokenizer(lm.tokenizer, n_vocab=vocab, eos_token=eos)
    except ValueError:  # a decoder llguidance cannot read (e.g. Fuse)
        wrapped = llg.TokenizerWrapper(_TokenTexts(lm))
        cached = llg.LLTokenizer(wrapped, n_vocab=vocab, eos_token=eos)
    with _LL_LOCK:
        return _LL_TOKENIZERS.setdefault(lm, cached)


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


class Matcher:
    """One grammar state: which tokens may come next, and the tokens taken so far."""

    def __init__(self, inner: Any, vocab: int) -> None:
        self.inner, self.vocab = inner, vocab

    @classmethod
    def start(cls, lm: LocalCausalLM, constraint: Constraint) -> Matcher:
        """A fresh state for `lm`; `ValueError` naming the problem for a grammar that does not
        compile."""
        llg = llguidance()
        tok = ll_tokenizer(lm)
        source = constraint.source
        if constraint.tokens and not _has_tokens(lm, constraint.tokens):
            source = constraint.text_source or source  # another vocabulary: the text twin
        inner = llg.LLMatcher(tok, grammar_of(constraint.kind, source), log_level=0)
        if inner.is_error():
            raise InvalidInputError(
                f"the {constraint.kind} constraint does not compile: {inner.get_error()}"
            )
        return cls(inner, int(tok.vocab_size))

    def fork(self) -> Matcher:
        return Matcher(self.inner.deep_copy(), self.vocab)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` `(V',)` with every token the grammar forbids next set to -inf (in place)."""
        return mask_rows(logits.unsqueeze(0), [self])[0]

    def fill(self, bits: torch.Tensor, row: int) -> None:
        """Write the allowed-next bitmask into row `row` of `bits` `(R, ceil(V / 32))` int32
        (on the CPU, where the grammar library writes it)."""
        import llguidance.torch as llt

        llt.fill_next_token_bitmask(self.inner, bits, row)

    def take(self, token: int) -> None:
        """Move on by a sampled token; `ValueError` if the grammar refuses it."""
        if not self.inner.consume_token(int(token)):
            why = first_line(self.inner.get_error())
            raise InvalidInputError(f"the constraint refused token {token}: {why}")

    def follow(self, tokens: list[int]) -> None:
        """Move on by tokens another writer chose (text valid under the grammar)."""
        if tokens and not self.inner.consume_tokens([int(t) for t in tokens]):
            why = first_line(self.inner.get_error())
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


def mask_rows(logits: torch.Tensor, grammars: list[Matcher | None]) -> torch.Tensor:
    """`logits` `(R, V')` with, in each row whose grammar is given, every token it forbids set
    to -inf (in place). The grammar library writes one packed bitmask `(R, ceil(V / 32))` on the
    CPU; it crosses to the logits' device once, is unpacked there into `(R, V)` and applied in
    one pass, rows without a grammar left as they are."""
    import torch

    live = [i for i, g in enumerate(grammars) if g is not None]
    if not live:
        return logits
    vocab = next(g.vocab for g in grammars if g is not None)
    words = (vocab + 31) // 32
    bits = torch.full((len(grammars), words), -1, dtype=torch.int32, device="cpu")
    for i in live:
        grammar = grammars[i]
        assert grammar is not None
        grammar.fill(bits, i)
    packed = bits.to(logits.device, non_blocking=True)  # (R, W)
    shifts = torch.arange(32, dtype=torch.int32, device=logits.device)
    allowed = ((packed.unsqueeze(-1) >> shifts) & 1).view(len(grammars), -1).bool()  # (R, 32 W)
    width = min(logits.shape[-1], vocab)
    logits[:, :width] = logits[:, :width].masked_fill(~allowed[:, :width], -torch.inf)
    if logits.shape[-1] > width:  # padding rows of the embedding are never text
        logits[live, width:] = -torch.inf
    return logits

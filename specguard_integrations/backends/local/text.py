"""The text side of a local model: encoding, decoding, the chat template and the vocabulary's
identity. `LocalCausalLM` has it; nothing here runs the model."""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING, Any

from ...errors import InvalidInputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class TextSide:
    """Text conventions of a model's tokenizer (`name`, `tokenizer` and `eos_ids` are set by
    the class that has it)."""

    name: str
    tokenizer: PreTrainedTokenizerBase
    eos_ids: frozenset[int] | set[int]

    @property
    def pad_id(self) -> int:
        """The token fed as padding by rows that have ended (ignored): the lowest EOS id."""
        return min(self.eos_ids) if self.eos_ids else 0

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def encode_continuation(self, text: str) -> list[int]:
        """Ids of `text` as it continues a sequence (no BOS, no added prefix space)."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        if self.decode(ids) == text or not text:
            return ids
        # SentencePiece-style tokenizers add a prefix space to a standalone string: encode after
        # an anchor and drop the anchor's ids.
        anchor = list(self.tokenizer.encode("\n", add_special_tokens=False))
        both = list(self.tokenizer.encode("\n" + text, add_special_tokens=False))
        if both[: len(anchor)] == anchor and self.decode(both[len(anchor) :]) == text:
            return both[len(anchor) :]
        return ids

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    @functools.cached_property
    def vocab_id(self) -> str:
        """A digest of the vocabulary: equal digests mean token ids can be exchanged with the
        other model without re-tokenising."""
        vocab = sorted(self.tokenizer.get_vocab().items())
        return hashlib.sha256(repr(vocab).encode("utf-8")).hexdigest()

    def same_vocab(self, other: TextSide) -> bool:
        """True when token ids can be exchanged with `other` without re-tokenising."""
        return self.tokenizer is other.tokenizer or self.vocab_id == other.vocab_id

    def render_chat(self, messages: list[dict[str, Any]], *, tools: list[Any] | None = None) -> str:
        """The chat template applied to messages exactly as given (a None value stays None: a
        template may test ``content is none``), with the assistant turn opened."""
        from ...tools.templates import render_as_given

        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInputError(f"tokenizer of {self.name} has no chat template")
        try:
            return render_as_given(
                self.tokenizer, messages, tools=tools, add_generation_prompt=True
            )
        except Exception as err:  # jinja raises its own errors (raise_exception, undefined)
            raise InvalidInputError(
                f"the chat template of {self.name} cannot render these messages: {err}"
            ) from None

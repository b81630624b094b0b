"""Special and turn tokens of a tokenizer: what generated content must never carry, and the
ids that end a generation (EOS, and any token that opens or closes a chat turn)."""

from __future__ import annotations

from typing import Any


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """EOS ids of the generation config and the tokenizer."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for src in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(i) for i in src)
    return frozenset(ids)


def special_texts(tokenizer: Any) -> tuple[str, ...]:
    """Texts of the special tokens and of the tokens the chat template writes around turns
    (some families, DeepSeek-V3 among them, mark role tokens as not special), longest
    first: what content must never carry."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts = {str(t.content) for t in added.values() if getattr(t, "special", False)}
    texts |= {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    texts |= turn_texts(tokenizer, _markers(added))
    return tuple(sorted((t for t in texts if t), key=len, reverse=True))


def turn_texts(tokenizer: Any, added: set[str]) -> set[str]:
    """Added tokens the chat template writes in a plain conversation (role markers, end of
    turn), read off a rendering once."""
    if not getattr(tokenizer, "chat_template", None):
        return set()
    convo = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    try:
        text = str(tokenizer.apply_chat_template(convo, tokenize=False))
    except Exception:  # a template that rejects this conversation gives no turn tokens
        return set()
    return {tok for tok in added if tok and tok in text}


def turn_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the turn tokens (BOS excepted): generation ends at any of them."""
    bos = getattr(tokenizer, "bos_token", None)
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    turn = turn_texts(tokenizer, _markers(added)) - {bos}
    ids = {tokenizer.convert_tokens_to_ids(tok) for tok in turn}
    return frozenset(i for i in ids if isinstance(i, int) and i >= 0)


def _markers(added: dict[int, Any]) -> set[str]:
    """Added tokens shaped like markup (``<|im_end|>``, ``<｜User｜>``, ``[INST]``), special or not;
    whitespace and word pieces that vocabularies also add (Gemma's ``\\n`` runs) are not."""
    out = set()
    for tok in added.values():
        text = str(tok.content)
        if getattr(tok, "special", False) or (
            len(text) >= 3
            and not any(c.isspace() for c in text)
            and text[0] in "<["
            and text[-1] in ">]"
        ):
            out.add(text)
    return out

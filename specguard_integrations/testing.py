"""Tiny models built in memory: for tests, examples and the offline smoke demo.

No download is involved: the tokenizer is a character vocabulary built with `tokenizers`, and the
models are randomly initialised Llama or GPT-2 configurations. They produce noise, but noise that
exercises every code path of the engine exactly like a real pair.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any, Literal

from .chat import CHAT_TEMPLATE
from .errors import InvalidInputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

    from .backends.local.model import LocalCausalLM

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def char_tokenizer(extra_chars: str = "") -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer over printable ASCII and newline, with BOS/EOS/PAD."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = list(dict.fromkeys([*string.printable[:95], "\n", *extra_chars]))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({c: i + len(SPECIALS) for i, c in enumerate(chars)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return bundled_style(tok)


def bundled_style(tok: Any) -> PreTrainedTokenizerFast:
    """A `tokenizers.Tokenizer` as a transformers tokenizer with the bundled pair's special
    tokens and chat template (tool calls included)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# Tiny configurations of real architectures: (config class, model class, extra config fields)
_FAMILIES: dict[str, tuple[str, str, dict[str, object]]] = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8, "tie_word_embeddings": True}),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16},
    ),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"head_dim": 8, "sliding_window": None}),
    "deepseek_v3": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        {
            "moe_intermediate_size": 16,
            "n_shared_experts": 1,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "n_group": 1,
            "topk_group": 1,
            "first_k_dense_replace": 1,
            "kv_lora_rank": 16,
            "q_lora_rank": 16,
            "qk_rope_head_dim": 8,
            "qk_nope_head_dim": 8,
            "v_head_dim": 8,
        },
    ),
}


def tiny_family_model(
    arch: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    context: int = 1024,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised model of a real architecture (``llama``, ``qwen3``, ``gemma3``,
    ``mistral``, ``deepseek_v3``) sized to `tokenizer`'s vocabulary, with its special ids."""
    import torch
    import transformers

    extra: dict[str, object] = {}
    if arch == "llama":
        cfg_name, model_name = "LlamaConfig", "LlamaForCausalLM"
    else:
        cfg_name, model_name, extra = _FAMILIES[arch]
    ids = {
        f"{k}_token_id": getattr(tokenizer, f"{k}_token_id", None) for k in ("bos", "eos", "pad")
    }
    cfg = getattr(transformers, cfg_name)(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2 if arch != "deepseek_v3" else heads,
        max_position_embeddings=context,
        **{k: v for k, v in ids.items() if v is not None},
        **extra,
    )
    if arch == "gemma3":  # sliding-window layers, then a full one, as Gemma 3 alternates them
        cfg.layer_types = ["sliding_attention"] * (layers - 1) + ["full_attention"]
    torch.manual_seed(seed)
    model: PreTrainedModel = getattr(transformers, model_name)(cfg)
    return model.eval()


def tiny_model(
    arch: Literal["llama", "gpt2"] = "llama",
    *,
    vocab_size: int = 100,
    hidden: int = 32,
    layers: int = 3,
    heads: int = 4,
    context: int = 512,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised causal LM built from a config in memory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model: PreTrainedModel
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=context,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg2 = GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=context,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = GPT2LMHeadModel(cfg2)
    else:
        raise InvalidInputError(f"arch: unknown tiny architecture {arch!r}")
    return model.eval()


def tiny_lm(
    arch: Literal["llama", "gpt2"] = "llama",
    *,
    seed: int = 0,
    name: str | None = None,
    attention: bool = True,
    **kwargs: int,
) -> LocalCausalLM:
    """`tiny_model` with the character tokenizer, wrapped for the engine."""
    from .backends.local.model import LocalCausalLM

    tok = char_tokenizer()
    model = tiny_model(arch, vocab_size=len(tok), seed=seed, **kwargs)
    return LocalCausalLM(model, tok, name=name or f"tiny-{arch}-{seed}", attention=attention)

"""Loading a model and tokenizer: devices, dtypes, the options that reach the tokenizer, and
errors that name the path and the reason (never a library's unsafe hint)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import InvalidInputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def resolve_device(device: Any) -> str:
    """ "auto" (or None): CUDA when torch sees it, else the CPU; otherwise a device torch can
    name and this machine has (`InvalidInputError` naming it before any weights load)."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidInputError(
            f"device: {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'auto')"
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise InvalidInputError(
                f"device: {device!r} asked for, but torch sees {count} CUDA device(s)"
            )
    return str(device)


def resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    found = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    if not isinstance(found, torch.dtype):
        raise InvalidInputError(
            f"dtype: {dtype!r} is not a torch dtype (e.g. 'float32', 'bfloat16', 'auto')"
        )
    return found


# from_pretrained options that locate the tokenizer as well as the weights
TOKENIZER_KWARGS = (
    "revision",
    "trust_remote_code",
    "gguf_file",
    "subfolder",
    "cache_dir",
    "token",
    "local_files_only",
)


def load_tokenizer(
    name_or_path: str, tokenizer_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained` with the model options of `TOKENIZER_KWARGS` and
    `tokenizer_kwargs` (a GGUF file carries its tokenizer: ``gguf_file`` loads it from there)."""
    from transformers import AutoTokenizer

    picked = {k: kwargs[k] for k in TOKENIZER_KWARGS if k in kwargs} | (tokenizer_kwargs or {})
    try:
        return AutoTokenizer.from_pretrained(name_or_path, **picked)
    except Exception as err:
        raise InvalidInputError(
            f"cannot load the tokenizer of {name_or_path!r}: {reason(err)}"
        ) from None


def reason(err: BaseException) -> str:
    """An error's message without hints that do not apply here (torch suggests unsafe
    ``weights_only=False`` loading for a file that is not a checkpoint)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "weights_only" in str(err) or type(err).__name__ == "UnpicklingError":
        return "not a model checkpoint"
    return text[:300]


def load_error(path: str, err: BaseException) -> InvalidInputError:
    """`cannot load causal LM from PATH: ...`, with the reason and no unsafe hints."""
    import os

    if os.path.isfile(path):
        hint = (
            "a file, not a model directory; for a GGUF file pass its directory and gguf_file=NAME"
            if str(path).endswith(".gguf")
            else "a file, not a model directory"
        )
        return InvalidInputError(f"cannot load causal LM from {path!r}: {hint}")
    return InvalidInputError(f"cannot load causal LM from {path!r}: {reason(err)}")


def attention_configs(model: Any) -> list[Any]:
    """Every config object of `model` that holds an attention implementation (the model's,
    its sub-models' and their sub-configs)."""
    from transformers import PreTrainedModel

    found: dict[int, Any] = {}
    todo = [m.config for m in model.modules() if isinstance(m, PreTrainedModel)]
    while todo:
        cfg = todo.pop()
        if id(cfg) in found or not hasattr(cfg, "_attn_implementation_internal"):
            continue
        found[id(cfg)] = cfg
        todo += [getattr(cfg, k) for k in getattr(cfg, "sub_configs", {}) if getattr(cfg, k, None)]
    return list(found.values())


def load_model(
    name_or_path: str,
    device: str | None,
    dtype: Any,
    tokenizer: PreTrainedTokenizerBase | None,
    model_kwargs: dict[str, Any],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`AutoModelForCausalLM.from_pretrained` and its tokenizer (`LocalCausalLM.from_pretrained`
    documents the options). With ``device_map`` accelerate places the weights, and "auto" dtype
    follows where CUDA is; else the model goes to `device`."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from . import gguf_cache

    hf_logging.disable_progress_bar()  # library code reports through logging, not bars
    model_kwargs = dict(model_kwargs)
    tok_kwargs = model_kwargs.pop("tokenizer_kwargs", None) or {}
    keep_copy = model_kwargs.pop("gguf_cache", True)
    placed = model_kwargs.get("device_map") is not None
    dev = resolve_device("auto" if placed else device)
    kwargs = {"dtype": resolve_dtype(dtype, dev), **model_kwargs}
    kwargs.setdefault("attn_implementation", "sdpa")
    source, copy_at = name_or_path, None
    gguf = (
        gguf_cache.gguf_path(name_or_path, model_kwargs["gguf_file"])
        if (keep_copy and model_kwargs.get("gguf_file"))
        else None
    )
    if gguf is not None:  # a GGUF file read once: later loads read its converted copy
        copy_at = gguf_cache.converted_dir(gguf, kwargs["dtype"])
        if gguf_cache.ready(copy_at):
            source = str(copy_at)
            for key in ("gguf_file", "subfolder"):
                kwargs.pop(key, None)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as err:  # transformers raises many kinds for a path that is no model
        raise load_error(name_or_path, err) from None
    if source != name_or_path:
        tok = tokenizer or load_tokenizer(source, tok_kwargs)
    else:
        tok = tokenizer or load_tokenizer(name_or_path, tok_kwargs, **model_kwargs)
        if gguf is not None and copy_at is not None:
            gguf_cache.save(copy_at, model, tok, gguf)
    if not placed:
        model.to(dev)  # type: ignore[arg-type]
    return model, tok


def context_window(model: Any, tokenizer: Any) -> int:
    """The positions the model takes: its config's, else the tokenizer's, else 2048."""
    cfg = model.config.get_text_config()
    for attr in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return int(value) if isinstance(value, int) and 0 < value < 10**7 else 2048


def attention_modules(model: Any, num_layers: int) -> list[Any]:
    """The self-attention module of each decoder layer, in depth order ([] if not one each)."""
    mods = [
        m
        for _, m in model.named_modules()
        if type(m).__name__.endswith("Attention") and "Cross" not in type(m).__name__
    ]
    return mods if len(mods) == num_layers else []

"""Attention probabilities of the rollout layers only, in float32, for one forward pass.

Grounding reads the attention of the last few layers. Switching the whole model to eager
attention for that would make every layer materialise its `(H, T, T)` probabilities; here one
attention function (registered in transformers' attention interface, as the grouped path's is)
computes the chosen layers the eager way, with the softmax kept in float32 whatever the model's
dtype (so values near the 0.01 cut do not flip with bf16 rounding), and every other layer by
scaled-dot-product attention. The mask is transformers' additive eager mask, which both take.

    with lm.implementation(IMPLEMENTATION), capturing({layer indices}):
        model(...)   # hooks on those layers' modules see (output, weights (B, H, Tq, Tk) fp32)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from ...errors import ModelError

IMPLEMENTATION = "specguard_capture"
_LAYERS: contextvars.ContextVar[frozenset[int] | None] = contextvars.ContextVar(
    "specguard_capture_layers", default=None
)


@contextlib.contextmanager
def capturing(layers: frozenset[int]) -> Iterator[None]:
    """The layers (by `layer_idx`) whose probabilities the pass computes and returns."""
    token = _LAYERS.set(layers)
    try:
        yield
    finally:
        _LAYERS.reset(token)


def capture_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(B, T, Hq, d)` output, and the float32 probabilities `(B, Hq, Tq, Tk)` for a captured
    layer (None for the others, which run scaled-dot-product attention)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if kwargs.get("s_aux") is not None:  # attention sinks: neither path here computes them
        raise AttentionUnavailable(f"{type(module).__name__} (attention sinks)")
    layers = _LAYERS.get()
    idx = getattr(module, "layer_idx", None)
    captured = layers is not None and (idx is None or idx in layers)
    if captured or kwargs.get("softcap") is not None:  # scaled-dot-product has no soft-capping
        out, weights = _eager_fp32(module, query, key, value, attention_mask, scaling, **kwargs)
        return out, weights if captured else None
    kwargs.pop("softcap", None)
    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    return out, None


def _eager_fp32(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with the scores and softmax in float32; the output in the model's dtype
    (from the probabilities cast to it, as eager attention computes it)."""
    import torch

    rep = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(rep, dim=1) if rep > 1 else key  # (B, Hq, Tk, d)
    v = value.repeat_interleave(rep, dim=1) if rep > 1 else value
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    w = torch.matmul(query.float(), k.float().transpose(2, 3)) * scale  # (B, Hq, Tq, Tk)
    softcap = kwargs.get("softcap")
    if softcap:
        w = torch.tanh(w / softcap) * softcap
    if attention_mask is not None:
        w = w + attention_mask[..., : k.shape[-2]].float()
    w = torch.softmax(w, dim=-1)
    out = torch.matmul(w.to(v.dtype), v).transpose(1, 2).contiguous()  # (B, Tq, Hq, d)
    return out, w


def register() -> None:
    """Make the implementation known to transformers (once per process): the function, and the
    eager mask it takes."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, capture_attention)
    if IMPLEMENTATION not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


class AttentionUnavailable(ModelError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name} did not return attention probabilities")

"""Loaded models shared across the process: one copy of the weights per (path, device, dtype).

LangChain and LlamaIndex objects that point at the same models share one `LocalCausalLM`, so
constructing adapters stays cheap and weights load once, on first use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import SpecGuardConfig
    from .engine.lm import LocalCausalLM
    from .engine.loop import SpecGuard

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, str], LocalCausalLM] = {}


def resolve(name: str | None, role: str) -> str:
    """A model id or path; None (or the bundled alias) means the bundled pair's model."""
    from .assets import BUNDLED_DRAFT, BUNDLED_TARGET, bundled_pair

    if name is None or name in (BUNDLED_DRAFT, BUNDLED_TARGET):
        draft, target = bundled_pair()
        return str(draft if role == "draft" else target)
    return name


def load_lm(name: str, *, device: str = "auto", dtype: str = "auto") -> LocalCausalLM:
    """The shared `LocalCausalLM` for a model id or path (loaded on first request)."""
    from .engine.lm import LocalCausalLM

    key = (name, str(device), str(dtype))
    with _LOCK:
        lm = _MODELS.get(key)
        if lm is None:
            display = name
            from .assets import ASSETS

            if name.startswith(str(ASSETS)):
                display = "specguard-bundled/" + name.rsplit("/", 1)[-1]
            lm = LocalCausalLM.from_pretrained(name, device=device, dtype=dtype, name=display)
            _MODELS[key] = lm
        return lm


def get_engine(
    draft: str | None,
    target: str | None,
    config: SpecGuardConfig | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    **_: Any,
) -> SpecGuard:
    """A `SpecGuard` over the shared models (None: the bundled pair)."""
    from .engine.loop import SpecGuard

    d = load_lm(resolve(draft, "draft"), device=device, dtype=dtype)
    t = load_lm(resolve(target, "target"), device=device, dtype=dtype)
    return SpecGuard(d, t, config)

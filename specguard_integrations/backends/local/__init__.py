"""A Hugging Face causal LM in this process: the model wrapper (`model.py`), loading and special
tokens, sampling, the target's speculative step, how its calls run (`runner.py`), and the draft
and target sessions the loop talks to (`sessions.py`, `target.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy

if TYPE_CHECKING:
    from .model import LocalCausalLM
    from .sessions import LocalDraft
    from .target import LocalTarget

__all__ = ["LocalCausalLM", "LocalDraft", "LocalTarget"]

__getattr__ = lazy(
    __name__, {"LocalCausalLM": ".model", "LocalDraft": ".sessions", "LocalTarget": ".target"}
)

"""The SpecGuard step loop and its parts: proposer, selector, signals, policy, backends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import DraftModel, LocalDraft, LocalTarget, TargetModel
    from .lm import LocalCausalLM
    from .loop import SpecGuard, StepStream

__all__ = [
    "DraftModel",
    "LocalCausalLM",
    "LocalDraft",
    "LocalTarget",
    "SpecGuard",
    "StepStream",
    "TargetModel",
]

_LAZY = {
    "DraftModel": ".backends",
    "LocalDraft": ".backends",
    "LocalTarget": ".backends",
    "TargetModel": ".backends",
    "LocalCausalLM": ".lm",
    "SpecGuard": ".loop",
    "StepStream": ".loop",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

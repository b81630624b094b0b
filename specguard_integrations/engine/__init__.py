"""The SpecGuard step loop and its parts: proposer, selector, signals, policy, backends
(local models, and remote ones behind an OpenAI-compatible server or LangChain)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import DraftModel, LocalDraft, LocalTarget, TargetModel
    from .lm import LocalCausalLM
    from .loop import SpecGuard, StepStream
    from .remote import EndpointDraft, EndpointError, EndpointTarget, LangChainTarget

__all__ = [
    "DraftModel",
    "EndpointDraft",
    "EndpointError",
    "EndpointTarget",
    "LangChainTarget",
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
    "EndpointDraft": ".remote",
    "EndpointError": ".remote",
    "EndpointTarget": ".remote",
    "LangChainTarget": ".remote",
    "LocalCausalLM": ".lm",
    "SpecGuard": ".loop",
    "StepStream": ".loop",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

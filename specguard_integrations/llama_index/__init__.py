"""LlamaIndex integration: `SpecGuardLLM` and its per-step instrumentation event.

Importing this package imports llama-index-core; it does not load any model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .llms import SpecGuardLLM, SpecGuardStepEvent
    from .react import REACT_HEADER, react_formatter

__all__ = ["REACT_HEADER", "SpecGuardLLM", "SpecGuardStepEvent", "react_formatter"]


def __getattr__(name: str) -> Any:
    if name in ("REACT_HEADER", "react_formatter"):
        from . import react

        return getattr(react, name)
    if name in __all__:
        from . import llms

        return getattr(llms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""LangChain integration: chat model, LLM, reasoning-chain Runnable.

Importing this package imports langchain-core (install `specguard-integrations` with its
default dependencies); it does not load any model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chains import SpecGuardReasoningChain
    from .chat_models import ChatSpecGuard
    from .llms import SpecGuardLLM
    from .target import LangChainTarget

__all__ = ["ChatSpecGuard", "LangChainTarget", "SpecGuardLLM", "SpecGuardReasoningChain"]

_LAZY = {
    "ChatSpecGuard": ".chat_models",
    "SpecGuardLLM": ".llms",
    "SpecGuardReasoningChain": ".chains",
    "LangChainTarget": ".target",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name], __name__)
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"{name} needs langchain-core: pip install 'specguard-integrations'"
            ) from err
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""LangChain integration: chat model, LLM, reasoning-chain Runnable.

Importing this package imports nothing heavy; its classes need langchain-core (the
``[langchain]`` extra: ``pip install 'specguard-integrations[langchain]'``), and a missing one is
an error that names the extra. No model loads until a class is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy

if TYPE_CHECKING:
    from .chains import SpecGuardReasoningChain
    from .chat_models import ChatSpecGuard
    from .llms import SpecGuardLLM
    from .llms import SpecGuardLLM as LangChainSpecGuardLLM
    from .target import LangChainTarget

__all__ = [
    "ChatSpecGuard",
    "LangChainSpecGuardLLM",
    "LangChainTarget",
    "SpecGuardLLM",
    "SpecGuardReasoningChain",
]

_LAZY = {
    "ChatSpecGuard": ".chat_models",
    "SpecGuardLLM": ".llms",
    "SpecGuardReasoningChain": ".chains",
    "LangChainTarget": ".target",
    "LangChainSpecGuardLLM": ".llms",
}

__getattr__ = lazy(__name__, _LAZY, extra="langchain")

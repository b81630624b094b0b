"""SpecGuard step-level speculative decoding, for Hugging Face models, LangChain and LlamaIndex.

Importing the package is cheap: torch, transformers and the framework integrations load on first
use of a name that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy
from .config import SpecGuardConfig
from .types import GenerationResult, PhaseTimes, StepRecord

if TYPE_CHECKING:
    from .engine.lm import LocalCausalLM
    from .engine.loop import SpecGuard, StepStream

__version__ = "0.1.0"

__all__ = [
    "GenerationResult",
    "LocalCausalLM",
    "PhaseTimes",
    "SpecGuard",
    "SpecGuardConfig",
    "StepRecord",
    "StepStream",
    "__version__",
]

_LAZY = {
    "LocalCausalLM": "specguard_integrations.engine.lm",
    "SpecGuard": "specguard_integrations.engine.loop",
    "StepStream": "specguard_integrations.engine.loop",
}

__getattr__ = lazy(__name__, _LAZY)

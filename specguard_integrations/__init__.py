"""SpecGuard step-level speculative decoding, for Hugging Face models, LangChain and LlamaIndex.

Importing the package is cheap: torch, transformers and the framework integrations load on first
use of a name that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy
from .config import SpecGuardConfig
from .constraint import Constraint
from .errors import (
    Cancelled,
    ConfigError,
    DeadlinePassed,
    EndpointError,
    EndpointRejected,
    EndpointReplyError,
    EndpointTimeout,
    EndpointUnreachable,
    GenerationTimeout,
    InvalidInputError,
    InvalidTypeError,
    MissingAssetError,
    MissingDependencyError,
    ModelError,
    SpecGuardError,
    StateError,
)
from .types import GenerationResult, PhaseTimes, StepRecord

if TYPE_CHECKING:
    from .backends.local.model import LocalCausalLM
    from .backends.remote.endpoint import EndpointDraft, EndpointTarget
    from .engine.loop import StepStream
    from .registry import SpecGuard

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "ConfigError",
    "Constraint",
    "DeadlinePassed",
    "EndpointDraft",
    "EndpointError",
    "EndpointRejected",
    "EndpointReplyError",
    "EndpointTarget",
    "EndpointTimeout",
    "EndpointUnreachable",
    "GenerationResult",
    "GenerationTimeout",
    "InvalidInputError",
    "InvalidTypeError",
    "LocalCausalLM",
    "MissingAssetError",
    "MissingDependencyError",
    "ModelError",
    "PhaseTimes",
    "SpecGuard",
    "SpecGuardConfig",
    "SpecGuardError",
    "StateError",
    "StepRecord",
    "StepStream",
    "__version__",
]

_LAZY = {
    "EndpointDraft": "specguard_integrations.backends.remote.endpoint",
    "EndpointTarget": "specguard_integrations.backends.remote.endpoint",
    "LocalCausalLM": "specguard_integrations.backends.local.model",
    "SpecGuard": "specguard_integrations.registry",
    "StepStream": "specguard_integrations.engine.loop",
}

__getattr__ = lazy(__name__, _LAZY)

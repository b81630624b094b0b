"""The SpecGuard step loop and its parts: proposer, selector, signals, policy, backends
(local models, and remote ones behind an OpenAI-compatible server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy

if TYPE_CHECKING:
    from .backends import DraftModel, TargetModel
    from .endpoint import EndpointDraft, EndpointTarget
    from .lm import LocalCausalLM
    from .local import LocalDraft, LocalTarget
    from .loop import SpecGuard, StepStream
    from .openai_client import EndpointError, EndpointUnreachable
    from .policy import FusionJudge, Judge, RewardModelJudge

__all__ = [
    "DraftModel",
    "EndpointDraft",
    "EndpointError",
    "EndpointTarget",
    "EndpointUnreachable",
    "FusionJudge",
    "Judge",
    "LocalCausalLM",
    "LocalDraft",
    "LocalTarget",
    "RewardModelJudge",
    "SpecGuard",
    "StepStream",
    "TargetModel",
]

_LAZY = {
    "DraftModel": ".backends",
    "TargetModel": ".backends",
    "EndpointDraft": ".endpoint",
    "EndpointTarget": ".endpoint",
    "EndpointError": ".openai_client",
    "EndpointUnreachable": ".openai_client",
    "FusionJudge": ".policy",
    "Judge": ".policy",
    "RewardModelJudge": ".policy",
    "LocalCausalLM": ".lm",
    "LocalDraft": ".local",
    "LocalTarget": ".local",
    "SpecGuard": ".loop",
    "StepStream": ".loop",
}

__getattr__ = lazy(__name__, _LAZY)

"""The SpecGuard method: the step loop and its parts (selection, signals, judges), the
protocols of the backends it runs on, and argument checks. No model code and no threads: local
models are in `backends.local`, servers in `backends.remote`, grouping in `runtime`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy

if TYPE_CHECKING:
    from .backends import DraftModel, TargetModel
    from .loop import SpecGuardEngine, StepStream
    from .policy import FusionJudge, Judge, RewardModelJudge

__all__ = [
    "DraftModel",
    "FusionJudge",
    "Judge",
    "RewardModelJudge",
    "SpecGuardEngine",
    "StepStream",
    "TargetModel",
]

_LAZY = {
    "DraftModel": ".backends",
    "TargetModel": ".backends",
    "FusionJudge": ".policy",
    "Judge": ".policy",
    "RewardModelJudge": ".policy",
    "SpecGuardEngine": ".loop",
    "StepStream": ".loop",
}

__getattr__ = lazy(__name__, _LAZY)

"""Step 4 of the loop: normalise both signals, fuse them, compare with the threshold.

    l~ = clip((l - l_lo) / (l_hi - l_lo), 0, 1)
    g~ = clip((g - g_lo) / (g_hi - g_lo), 0, 1)
    r  = beta * l~ + (1 - beta) * g~          accept  <=>  r >= tau

A weighted sum, not two thresholds. Without grounding (a draft with no attention access, or the
confidence-only ablation) ``r = l~``.

The loop asks a `Judge` for the verdict: `FusionJudge` is SpecGuard's rule above;
`RewardModelJudge` is reward-guided speculative decoding (RSD), where a process reward model
scores the step and ``r = PRM(ctx, step)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import SpecGuardConfig
    from ..types import SignalMode
    from .backends import StepSignals


def normalise(x: float, bounds: tuple[float, float]) -> float:
    """Min-max normalisation with fixed bounds, clipped to [0, 1]."""
    lo, hi = bounds
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def fuse(confidence_norm: float, grounding_norm: float | None, beta: float) -> float:
    """r = beta * l~ + (1 - beta) * g~, or l~ when grounding is unavailable."""
    if grounding_norm is None:
        return confidence_norm
    return beta * confidence_norm + (1.0 - beta) * grounding_norm


@dataclass(frozen=True)
class Verdict:
    confidence_norm: float
    grounding_norm: float | None
    fused: float
    accept: bool
    signals: SignalMode = "grounding+confidence"


def decide(
    confidence: float,
    grounding: float | None,
    *,
    beta: float,
    tau: float,
    confidence_bounds: tuple[float, float],
    grounding_bounds: tuple[float, float],
) -> Verdict:
    """Normalise, fuse and threshold one step's signals."""
    l_norm = normalise(confidence, confidence_bounds)
    g_norm = None if grounding is None else normalise(grounding, grounding_bounds)
    r = fuse(l_norm, g_norm, beta)
    mode: SignalMode = "confidence_only" if g_norm is None else "grounding+confidence"
    return Verdict(l_norm, g_norm, r, r >= tau, mode)


class Judge(Protocol):
    """Step 4 as a strategy: the verdict on the selected draft step."""

    def judge(
        self, signals: StepSignals, context: str, step: str, config: SpecGuardConfig
    ) -> Verdict: ...


class FusionJudge:
    """SpecGuard: the fused draft signals against tau."""

    def judge(
        self, signals: StepSignals, context: str, step: str, config: SpecGuardConfig
    ) -> Verdict:
        return decide(
            signals.confidence,
            signals.grounding,
            beta=config.beta,
            tau=config.tau,
            confidence_bounds=config.confidence_bounds,
            grounding_bounds=config.grounding_bounds,
        )


class StepVerifier(Protocol):
    """An external judge of a draft step (a process reward model): `score` is in [0, 1]."""

    name: str

    def score(self, context: str, step: str) -> float: ...


@dataclass
class RewardModelJudge:
    """Reward-guided SD: ``r = PRM(ctx, step)``, accept iff r >= tau. The draft signals are still
    normalised and recorded beside the reward."""

    verifier: StepVerifier

    def judge(
        self, signals: StepSignals, context: str, step: str, config: SpecGuardConfig
    ) -> Verdict:
        fused = FusionJudge().judge(signals, context, step, config)
        reward = self.verifier.score(context, step)
        return Verdict(
            fused.confidence_norm,
            fused.grounding_norm,
            reward,
            reward >= config.tau,
            "reward_model",
        )

"""Step 4 of the loop: normalise both signals, fuse them, compare with the threshold.

    l~ = clip((l - l_lo) / (l_hi - l_lo), 0, 1)
    g~ = clip((g - g_lo) / (g_hi - g_lo), 0, 1)
    r  = beta * l~ + (1 - beta) * g~          accept  <=>  r >= tau

A weighted sum, not two thresholds. Without grounding (a draft with no attention access, or the
confidence-only ablation) ``r = l~``.

The loop asks a `Judge` for the verdict: `FusionJudge` is SpecGuard's rule above;
`RewardModelJudge` is reward-guided speculative decoding (RSD), where a process reward model
scores the step and ``r = PRM(ctx, step)``; `TargetJudge` is the target-verified judge, which
reads the target's own log-probabilities of the step's tokens (in the target's tokenizer) from
the catch-up prefill the target owes the step anyway:

    t  = agg_t log p_target(s_t | ctx, s_<t)       agg: min, mean or the q-quantile
    t~ = clip((t - t_lo) / (t_hi - t_lo), 0, 1)
    r  = gamma * t~ + (1 - gamma) * r_draft        accept  <=>  r >= tau

with ``r_draft`` the fused draft score above (``gamma = 1``: the target's score alone). A step
with no token the target can score (an empty step ended by EOS, seen by a remote target) is
judged by ``r_draft``. With a band ``(lo, hi)`` the target verifies only the steps the draft is
unsure of, a cascade:

    r_draft > hi  ->  accept,  r_draft < lo  ->  reject   (on the draft's word, no prefill)
    otherwise     ->  the target-verified rule above
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import InvalidInputError

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
    target_score: float | None = None  # t (the target-verified judge), else None
    target_norm: float | None = None  # t~


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


def aggregate(values: list[float] | tuple[float, ...], how: str, q: float = 0.1) -> float:
    """min, mean, or the q-quantile (linear interpolation between order statistics)."""
    if not values:
        raise InvalidInputError("cannot aggregate the log-probabilities of an empty step")
    if how == "min":
        return min(values)
    if how == "mean":
        return sum(values) / len(values)
    if how != "quantile":
        raise InvalidInputError(f"unknown aggregate {how!r}: use min, mean or quantile")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class Judge(Protocol):
    """Step 4 as a strategy: the verdict on the selected draft step. For a judge that
    `reads_target` the loop has the target verify the step first, and the judge gets the
    target's log-probabilities of the step in `signals.target_logprobs` (for the steps in the
    config's band, `needs_target`)."""

    reads_target: bool

    def judge(
        self, signals: StepSignals, context: str, step: str, config: SpecGuardConfig
    ) -> Verdict: ...


def in_band(signals: StepSignals, config: SpecGuardConfig) -> bool:
    """r_draft within `config.target_band` (every step without a band)."""
    lo, hi = config.target_band
    return lo <= _draft_score(signals, config) <= hi


def needs_target(judge: Judge, signals: StepSignals, config: SpecGuardConfig) -> bool:
    """Whether the loop has the target verify this step for `judge`: one that reads the target,
    for a step in the config's band. A band needs ``judge="target"``, so a judge of one's own
    (which cannot be combined with it) has every step verified."""
    return judge.reads_target and in_band(signals, config)


class FusionJudge:
    """SpecGuard: the fused draft signals against tau."""

    reads_target = False

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
    reads_target = False

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


class TargetJudge:
    """The target-verified judge: ``r = gamma * t~ + (1 - gamma) * r_draft`` against tau, with
    ``t`` the aggregate of the target's log-probabilities of the step's tokens."""

    reads_target = True

    def needs_target(self, signals: StepSignals, config: SpecGuardConfig) -> bool:
        """r_draft within `config.target_band`."""
        return in_band(signals, config)

    def judge(
        self, signals: StepSignals, context: str, step: str, config: SpecGuardConfig
    ) -> Verdict:
        draft = FusionJudge().judge(signals, context, step, config)
        if signals.target_logprobs is None:
            if self.needs_target(signals, config):
                raise InvalidInputError(
                    "the target-verified judge needs the target's log-probabilities"
                )
            # outside the band, the draft's word: above it keep, below it reject
            keep = draft.fused > config.target_band[1]
            return dataclasses.replace(draft, accept=keep, signals="draft_band")
        if not signals.target_logprobs:  # nothing the target could score: the draft's verdict
            return dataclasses.replace(draft, signals="target_verified")
        t = aggregate(signals.target_logprobs, config.target_aggregate, config.target_quantile)
        t_norm = normalise(t, config.target_bounds)
        gamma = config.target_weight
        r = gamma * t_norm + (1.0 - gamma) * draft.fused
        return Verdict(
            draft.confidence_norm,
            draft.grounding_norm,
            r,
            r >= config.tau,
            "target_verified",
            target_score=t,
            target_norm=t_norm,
        )


def _draft_score(signals: StepSignals, config: SpecGuardConfig) -> float:
    return FusionJudge().judge(signals, "", "", config).fused


def judge_for(config: SpecGuardConfig) -> Judge:
    """The judge `config.judge` names."""
    return TargetJudge() if config.judge == "target" else FusionJudge()

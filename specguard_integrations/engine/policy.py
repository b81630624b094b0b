"""Step 4 of the loop: normalise both signals, fuse them, compare with the threshold.

    l~ = clip((l - l_lo) / (l_hi - l_lo), 0, 1)
    g~ = clip((g - g_lo) / (g_hi - g_lo), 0, 1)
    r  = beta * l~ + (1 - beta) * g~          accept  <=>  r >= tau

A weighted sum, not two thresholds. Without grounding (a draft with no attention access, or the
confidence-only ablation) ``r = l~``.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    return Verdict(l_norm, g_norm, r, r >= tau)

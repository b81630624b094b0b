"""`specguard calibrate`: fit the normalisation bounds, beta and tau on a dev split.

The paper hand-tunes its threshold. Here:

1. **Bounds.** Run the loop with every draft step kept (tau = 0) over the dev items and set
   ``(l_lo, l_hi)`` and ``(g_lo, g_hi)`` to the 5th and 95th percentiles of the draft's raw
   confidence and grounding.
2. **Shortlist.** For beta on a grid and tau at quantiles of the resulting fused scores, predict
   from those steps the target-call rate (share of steps with r < tau) and, where the checker
   labels steps, the incorrect steps that would be kept. Keep the candidates that best meet the
   objective on this prediction.
3. **Choose.** Run each shortlisted config end to end on the dev items (the trajectory changes
   once steps are rejected, so the prediction is only a guide) and pick by the objective:
   - ``max_target_rate=R``: the highest accuracy with a measured target-call rate <= R (ties:
     the lower rate); if none fits, the lowest rate;
   - ``target_rate=R``: the measured rate closest to R (ties: the higher accuracy).

The result is a `SpecGuardConfig` written with `to_file`, which `generate`, `bench`, `serve` and
the adapters accept, with the dev figures beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .runner import percentile

if TYPE_CHECKING:
    from ..config import SpecGuardConfig
    from ..engine.loop import SpecGuard
    from ..tasks.base import Item

BETAS = (0.0, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0)
TAU_QUANTILES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass
class Candidate:
    beta: float
    tau: float
    predicted_target_rate: float
    predicted_bad_accepts: float | None  # share of incorrect steps kept (None: no labels)
    accuracy: float | None = None
    target_call_rate: float | None = None
    seconds: float | None = None


@dataclass
class CalibrationResult:
    config: SpecGuardConfig
    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    objective: dict[str, float] = field(default_factory=dict)
    dev_items: int = 0

    def extras(self) -> dict[str, Any]:
        """What `to_file` writes beside the config."""
        return {
            "calibration": {
                "objective": self.objective,
                "dev_items": self.dev_items,
                "chosen": asdict(self.chosen),
                "candidates": [asdict(c) for c in self.candidates],
            }
        }


def _norm(x: float, lo: float, hi: float) -> float:
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def _evaluate(
    engine: SpecGuard, items: list[Item], cfg: SpecGuardConfig
) -> tuple[float, float, float]:
    """(accuracy, target-call rate, seconds) of a config on the items."""
    from ..tasks.runner import solve_specguard

    solved = [solve_specguard(engine, it, cfg) for it in items]
    steps = [r for s in solved for r in s.records]
    rate = sum(r.source == "target" for r in steps) / max(len(steps), 1)
    return sum(s.correct for s in solved) / len(solved), rate, sum(s.seconds for s in solved)


def calibrate(
    engine: SpecGuard,
    items: list[Item],
    base: SpecGuardConfig,
    *,
    max_target_rate: float | None = None,
    target_rate: float | None = None,
    shortlist: int = 6,
    progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Fit bounds, beta and tau for `engine` on `items` (see the module doc)."""
    from ..tasks.runner import solve_specguard

    if (max_target_rate is None) == (target_rate is None):
        raise ValueError("give exactly one of max_target_rate and target_rate")
    goal = max_target_rate if max_target_rate is not None else target_rate
    assert goal is not None
    if not 0.0 <= goal <= 1.0:
        raise ValueError(f"a target-call rate is in [0, 1], got {goal}")
    if not items:
        raise ValueError("calibration needs dev items")
    if shortlist < 1:
        raise ValueError("shortlist must be >= 1")

    # 1. bounds from the draft's own signals, every step kept
    conf, ground, labels = [], [], []
    keep_all = base.merged(tau=0.0)
    for it in items:
        s = solve_specguard(engine, it, keep_all)
        for i, r in enumerate(s.records):
            conf.append(r.confidence)
            ground.append(r.grounding)
            labels.append(it.check_step(i, r.draft_text).ok if it.has_step_labels else None)
        if progress:
            progress("signals")
    if not conf:
        raise ValueError("the dev items produced no steps")
    c_lo, c_hi = percentile(conf, 0.05), percentile(conf, 0.95)
    if c_hi <= c_lo:
        c_lo, c_hi = c_hi - 1.0, c_hi
    gs = [g for g in ground if g is not None]
    if gs:
        g_lo, g_hi = percentile(gs, 0.05), percentile(gs, 0.95)
        if g_hi <= g_lo:
            g_lo, g_hi = g_lo - 0.01, g_lo + 0.01
    else:
        g_lo, g_hi = base.grounding_bounds
    bounded = base.merged(confidence_bounds=(c_lo, c_hi), grounding_bounds=(g_lo, g_hi))

    # 2. shortlist on the recorded steps
    labelled = all(y is not None for y in labels)
    cands: list[Candidate] = []
    betas = BETAS if gs and base.use_grounding else (1.0,)
    for beta in betas:
        fused = []
        for lc, g in zip(conf, ground, strict=True):
            ln = _norm(lc, c_lo, c_hi)
            fused.append(ln if g is None else beta * ln + (1 - beta) * _norm(g, g_lo, g_hi))
        taus = sorted({round(percentile(fused, q), 4) for q in TAU_QUANTILES})
        for tau in taus:
            kept = [r >= tau for r in fused]
            rate = 1.0 - sum(kept) / len(kept)
            bad = None
            if labelled:
                wrong = [k for k, y in zip(kept, labels, strict=True) if not y]
                bad = sum(wrong) / max(len(wrong), 1)
            cands.append(Candidate(beta, tau, rate, bad))

    def predicted_key(c: Candidate) -> tuple[float, ...]:
        bad = c.predicted_bad_accepts if c.predicted_bad_accepts is not None else 0.0
        if max_target_rate is not None:
            over = max(0.0, c.predicted_target_rate - max_target_rate)
            return (over, bad, c.predicted_target_rate)
        return (abs(c.predicted_target_rate - goal), bad)

    short = sorted(cands, key=predicted_key)[:shortlist]

    # 3. choose by the measured objective
    for c in short:
        c.accuracy, c.target_call_rate, c.seconds = _evaluate(
            engine, items, bounded.merged(beta=c.beta, tau=c.tau)
        )
        if progress:
            progress("candidates")

    def measured_key(c: Candidate) -> tuple[float, ...]:
        assert c.accuracy is not None and c.target_call_rate is not None
        if max_target_rate is not None:
            fits = c.target_call_rate <= max_target_rate + 1e-9
            return (
                0.0 if fits else 1.0,
                -c.accuracy if fits else c.target_call_rate,
                c.target_call_rate,
            )
        return (abs(c.target_call_rate - goal), -c.accuracy)

    chosen = min(short, key=measured_key)
    objective = (
        {"max_target_rate": max_target_rate}
        if max_target_rate is not None
        else {"target_rate": goal}
    )
    return CalibrationResult(
        config=bounded.merged(beta=chosen.beta, tau=chosen.tau),
        chosen=chosen,
        candidates=short,
        objective=objective,
        dev_items=len(items),
    )

"""`specguard calibrate`: fit the normalisation bounds, beta and tau on a dev split.

The paper hand-tunes its threshold. Here:

1. **Bounds.** Run the loop with every draft step kept (tau = 0) over the dev items and set
   ``(l_lo, l_hi)`` and ``(g_lo, g_hi)`` to the 5th and 95th percentiles of the draft's raw
   confidence and grounding.
2. **Shortlist.** For beta on a grid and tau at quantiles of the resulting fused scores, predict
   from those steps the target-call rate (share of steps with r < tau) and, where the checker
   labels steps, the incorrect steps that would be kept. Under a rate cap, keep in each 0.05
   bucket of predicted rate within the cap the candidate with the fewest incorrect steps kept,
   and shortlist buckets spread from the lowest rate to the highest; for a rate goal, the
   candidates predicted closest to it.
3. **Choose.** Run each shortlisted config end to end on the dev items (the trajectory changes
   once steps are rejected, so the prediction is only a guide) and pick by the objective:
   - ``max_target_rate=R``: the highest accuracy with a measured target-call rate <= R (ties:
     the lower rate); if none fits, the lowest rate;
   - ``target_rate=R``: the measured rate closest to R (ties: the higher accuracy).

Without labels (`calibrate_unlabelled`, ``specguard calibrate --prompts FILE --target-rate R``)
the user's own prompts stand in for the dev items: the bounds come from the same percentiles,
beta stays as given (there is nothing to choose it by), and tau is searched on end-to-end runs
until the measured target-call rate is closest to R.

Under the target-verified judge (``judge="target"``) the keep-all run records the target's
score ``t`` of every step as well: its bounds ``(t_lo, t_hi)`` come from the same percentiles,
and the weight ``gamma`` of ``t~`` against the draft's fused score is chosen with beta and tau
(labelled) or stays as given (unlabelled). Labelled, a fourth stage fits the cascade's band:

4. **Band.** On the keep-all steps, take the widest top range of the draft's score ``r_draft``
   in which at least 98% of the steps would be kept by the chosen rule, and the widest bottom
   range in which at least 98% would be rejected; outside ``[lo, hi]`` the draft's word then
   stands in for the target's, with no prefill. The banded config is run end to end and taken
   when it is at least as accurate as the chosen one in fewer seconds.

The result is a `SpecGuardConfig` written with `to_file`, which `generate`, `bench`, `serve` and
the adapters accept, with the dev figures beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .runner import percentile

if TYPE_CHECKING:
    from ..config import SpecGuardConfig
    from ..engine.loop import SpecGuardEngine
    from ..tasks.base import Item

Progress = Callable[[str], None] | None

BETAS = (0.0, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0)
GAMMAS = (1.0, 0.8, 0.6, 0.4)  # weights of the target's score under the target-verified judge
RATE_BUCKET = 0.05  # width of the predicted-rate buckets the shortlist spreads over
BAND_AGREEMENT = 0.98  # share of band-decided dev steps whose draft verdict matches the target's
FULL_BAND = (0.0, 1.0)  # the target verifies every step
TAU_QUANTILES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass
class Setting:
    """One configuration calibration weighs: its weights and threshold, what the kept signals
    predict of it, and what a run measured (once measured)."""

    beta: float
    tau: float
    predicted_target_rate: float
    target_weight: float | None = None  # gamma (the target-verified judge), else None
    predicted_bad_accepts: float | None = None  # share of incorrect steps kept (None: no labels)
    accuracy: float | None = None
    target_call_rate: float | None = None
    seconds: float | None = None
    target_band: tuple[float, float] | None = None  # the cascade's band (stage 4), else None


@dataclass
class CalibrationResult:
    config: SpecGuardConfig
    chosen: Setting
    candidates: list[Setting] = field(default_factory=list)
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


def _check_goal(goal: float | None) -> float:
    if goal is None or not 0.0 <= goal <= 1.0:
        raise InvalidInputError(f"a target-call rate is in [0, 1], got {goal}")
    return goal


@dataclass
class Signals:
    """The raw signals of every draft step kept in a keep-all run, with checker labels."""

    confidence: list[float] = field(default_factory=list)
    grounding: list[float | None] = field(default_factory=list)
    target: list[float | None] = field(default_factory=list)  # t (target-verified judge)
    labels: list[bool | None] = field(default_factory=list)

    def add(self, records: list[Any], labels: list[bool | None]) -> None:
        for r, y in zip(records, labels, strict=True):
            self.confidence.append(r.confidence)
            self.grounding.append(r.grounding)
            self.target.append(r.target_score)
            self.labels.append(y)

    @property
    def labelled(self) -> bool:
        return bool(self.labels) and all(y is not None for y in self.labels)

    def fused(self, beta: float, cfg: SpecGuardConfig, gamma: float | None = None) -> list[float]:
        """r of every step: the draft's fused score, or with `gamma` the target-verified
        ``gamma * t~ + (1 - gamma) * r_draft`` (``r_draft`` where the target scored nothing)."""
        (c_lo, c_hi), (g_lo, g_hi) = cfg.confidence_bounds, cfg.grounding_bounds
        t_lo, t_hi = cfg.target_bounds
        out = []
        for lc, g, t in zip(self.confidence, self.grounding, self.target, strict=True):
            ln = _norm(lc, c_lo, c_hi)
            r = ln if g is None else beta * ln + (1 - beta) * _norm(g, g_lo, g_hi)
            if gamma is not None and t is not None:
                r = gamma * _norm(t, t_lo, t_hi) + (1 - gamma) * r
            out.append(r)
        return out

    def gamma(self, cfg: SpecGuardConfig) -> float | None:
        """The config's target weight when its judge reads the target, else None."""
        return cfg.target_weight if cfg.judge == "target" else None


def fit_bounds(sig: Signals, base: SpecGuardConfig) -> SpecGuardConfig:
    """1. ``(l_lo, l_hi)`` and ``(g_lo, g_hi)`` at the 5th and 95th percentiles."""
    if not sig.confidence:
        raise InvalidInputError("the calibration prompts produced no steps")
    c_lo, c_hi = percentile(sig.confidence, 0.05), percentile(sig.confidence, 0.95)
    if c_hi <= c_lo:
        c_lo, c_hi = c_hi - 1.0, c_hi
    gs = [g for g in sig.grounding if g is not None]
    if gs:
        g_lo, g_hi = percentile(gs, 0.05), percentile(gs, 0.95)
        if g_hi <= g_lo:
            g_lo, g_hi = g_lo - 0.01, g_lo + 0.01
    else:
        g_lo, g_hi = base.grounding_bounds
    bounded = base.merged(confidence_bounds=(c_lo, c_hi), grounding_bounds=(g_lo, g_hi))
    ts = [t for t in sig.target if t is not None]
    if ts:
        t_lo, t_hi = percentile(ts, 0.05), percentile(ts, 0.95)
        if t_hi <= t_lo:
            t_lo, t_hi = t_hi - 1.0, t_hi
        bounded = bounded.merged(target_bounds=(t_lo, t_hi))
    return bounded


def _predict(sig: Signals, bounded: SpecGuardConfig) -> list[Setting]:
    """2. Every (beta, tau) on the grid with its predicted rate and kept incorrect steps."""
    grounded = any(g is not None for g in sig.grounding) and bounded.use_grounding
    verified = bounded.judge == "target"
    cands = []
    for gamma in GAMMAS if verified else (None,):
        # with the target's score alone, beta changes nothing
        betas = BETAS if grounded and gamma != 1.0 else (bounded.beta if grounded else 1.0,)
        for beta in betas:
            fused = sig.fused(beta, bounded, gamma)
            for tau in sorted({round(percentile(fused, q), 4) for q in TAU_QUANTILES}):
                kept = [r >= tau for r in fused]
                bad = None
                if sig.labelled:
                    wrong = [k for k, y in zip(kept, sig.labels, strict=True) if not y]
                    bad = sum(wrong) / max(len(wrong), 1)
                rate = 1.0 - sum(kept) / len(kept)
                cands.append(Setting(beta, tau, rate, gamma, bad))
    return cands


def _measure(
    engine: SpecGuardEngine,
    cfg: SpecGuardConfig,
    *,
    items: list[Item] | None = None,
    prompts: list[str] | None = None,
) -> tuple[float | None, float, float]:
    """The one run both calibrations measure a config by: (accuracy on `items`, None on
    unlabelled `prompts`; target-call rate over every step; seconds)."""
    from ..tasks.runner import solve_specguard

    if items is not None:
        solved = [solve_specguard(engine, it, cfg) for it in items]
        steps = [r for s in solved for r in s.records]
        accuracy: float | None = sum(s.correct for s in solved) / len(solved)
        seconds = sum(s.seconds for s in solved)
    else:
        results = [engine.generate(p, config=cfg) for p in prompts or []]
        steps = [r for res in results for r in res.steps]
        accuracy, seconds = None, sum(res.wall_time for res in results)
    rate = sum(r.source == "target" for r in steps) / max(len(steps), 1)
    return accuracy, rate, seconds


def _keep_all_signals(
    engine: SpecGuardEngine, items: list[Item], base: SpecGuardConfig, progress: Progress
) -> Signals:
    from ..tasks.runner import solve_specguard

    sig = Signals()
    keep_all = base.merged(tau=0.0, target_band=FULL_BAND)  # every step kept, every step scored
    for it in items:
        s = solve_specguard(engine, it, keep_all)
        labels: list[bool | None] = [
            it.check_step(i, r.draft_text).ok if it.has_step_labels else None
            for i, r in enumerate(s.records)
        ]
        sig.add(s.records, labels)
        if progress:
            progress("signals")
    return sig


def calibrate(
    engine: SpecGuardEngine,
    items: list[Item],
    base: SpecGuardConfig,
    *,
    max_target_rate: float | None = None,
    target_rate: float | None = None,
    shortlist: int = 6,
    progress: Progress = None,
) -> CalibrationResult:
    """Fit bounds, beta and tau for `engine` on `items` (see the module doc)."""
    if (max_target_rate is None) == (target_rate is None):
        raise InvalidInputError("give exactly one of max_target_rate and target_rate")
    goal = _check_goal(max_target_rate if max_target_rate is not None else target_rate)
    if not items:
        raise InvalidInputError("calibration needs dev items")
    if shortlist < 1:
        raise InvalidInputError("shortlist must be >= 1")
    sig = _keep_all_signals(engine, items, base, progress)
    bounded = fit_bounds(sig, base).merged(target_band=FULL_BAND)  # 1.; a band is fitted in 4.
    short = _shortlist(_predict(sig, bounded), max_target_rate, goal, shortlist)
    for c in short:  # 3. measured
        c.accuracy, c.target_call_rate, c.seconds = _measure(
            engine, _config(bounded, c), items=items
        )
        if progress:
            progress("candidates")
    chosen = min(short, key=_measured_key(max_target_rate, goal))
    if bounded.judge == "target" and sig.labelled:  # 4. the band
        chosen = _banded(engine, items, sig, bounded, chosen, short, max_target_rate, goal)
    objective = {"max_target_rate": goal} if max_target_rate is not None else {"target_rate": goal}
    return CalibrationResult(
        config=_config(bounded, chosen),
        chosen=chosen,
        candidates=short,
        objective=objective,
        dev_items=len(items),
    )


def _shortlist(cands: list[Setting], cap: float | None, goal: float, n: int) -> list[Setting]:
    """The `n` candidates run end to end. With a rate cap: among those predicted within it, the
    fewest predicted incorrect steps kept in each rate bucket (0.05 wide), buckets spread from
    the lowest rate to the highest, so the measured rule can take the cheapest config that keeps
    the accuracy (a judge that separates well keeps it far below the cap). Otherwise, or when
    no candidate fits the cap, the best by the predicted objective."""
    by_key = sorted(cands, key=_predicted_key(cap, goal))
    fits = [c for c in by_key if cap is not None and c.predicted_target_rate <= cap + 1e-9]
    if not fits:
        return by_key[:n]
    best: dict[int, Setting] = {}
    for c in fits:  # by_key order: the first in a bucket keeps the fewest bad accepts
        best.setdefault(round(c.predicted_target_rate / RATE_BUCKET), c)
    spread = [best[b] for b in sorted(best)]
    if len(spread) > n:
        spread = [spread[round(i * (len(spread) - 1) / max(n - 1, 1))] for i in range(n)]
    rest = [c for c in by_key if c not in spread]
    return (spread + rest)[:n]


def _config(bounded: SpecGuardConfig, c: Setting) -> SpecGuardConfig:
    return bounded.merged(
        beta=c.beta, tau=c.tau, target_weight=c.target_weight, target_band=c.target_band
    )


def fit_band(sig: Signals, cfg: SpecGuardConfig) -> tuple[float, float]:
    """4. ``(lo, hi)``: the lowest ``hi`` such that at least `BAND_AGREEMENT` of the steps with
    ``r_draft > hi`` are kept by `cfg`'s target-verified rule, and the highest ``lo`` such that
    at least as many of those with ``r_draft < lo`` are rejected by it. (0, 1): no band."""
    r_draft = sig.fused(cfg.beta, cfg)
    kept = [r >= cfg.tau for r in sig.fused(cfg.beta, cfg, cfg.target_weight)]
    steps = sorted(zip(r_draft, kept, strict=True))
    values = sorted({r for r, _ in steps})
    lo, hi = 0.0, 1.0
    n = agree = 0  # steps above the candidate hi, and those the rule keeps
    i = len(steps)
    for h in reversed(values):  # one pass down the sorted steps
        while i > 0 and steps[i - 1][0] > h:
            i -= 1
            n, agree = n + 1, agree + steps[i][1]
        if n and agree < BAND_AGREEMENT * n:
            break
        hi = h if n else hi
    n = agree = i = 0  # steps below the candidate lo, and those the rule rejects
    for low in values:
        while i < len(steps) and steps[i][0] < low:
            n, agree = n + 1, agree + (not steps[i][1])
            i += 1
        if n and agree < BAND_AGREEMENT * n:
            break
        lo = low if n else lo
    return (min(lo, hi), hi)


def _banded(
    engine: SpecGuardEngine,
    items: list[Item],
    sig: Signals,
    bounded: SpecGuardConfig,
    chosen: Setting,
    short: list[Setting],
    cap: float | None,
    goal: float,
) -> Setting:
    """The chosen candidate with the fitted band, when it runs at least as accurately in fewer
    seconds and still meets the objective; else the chosen one."""
    band = fit_band(sig, _config(bounded, chosen))
    if band == FULL_BAND:
        return chosen
    c = dataclasses.replace(chosen, target_band=band)
    c.accuracy, c.target_call_rate, c.seconds = _measure(engine, _config(bounded, c), items=items)
    short.append(c)
    assert chosen.accuracy is not None and c.accuracy is not None
    faster = (c.seconds or 0.0) < (chosen.seconds or 0.0) and c.accuracy >= chosen.accuracy
    key = _measured_key(cap, goal)
    return c if faster and key(c)[0] <= key(chosen)[0] else chosen


def _predicted_key(cap: float | None, goal: float) -> Callable[[Setting], tuple[float, ...]]:
    def key(c: Setting) -> tuple[float, ...]:
        bad = c.predicted_bad_accepts if c.predicted_bad_accepts is not None else 0.0
        if cap is not None:
            return (max(0.0, c.predicted_target_rate - cap), bad, c.predicted_target_rate)
        return (abs(c.predicted_target_rate - goal), bad)

    return key


def _measured_key(cap: float | None, goal: float) -> Callable[[Setting], tuple[float, ...]]:
    def key(c: Setting) -> tuple[float, ...]:
        assert c.accuracy is not None and c.target_call_rate is not None
        if cap is not None:
            fits = c.target_call_rate <= cap + 1e-9
            return (
                0.0 if fits else 1.0,
                -c.accuracy if fits else c.target_call_rate,
                c.target_call_rate,
            )
        return (abs(c.target_call_rate - goal), -c.accuracy)

    return key


# ---------------------------------------------------------------- without labels
def calibrate_unlabelled(
    engine: SpecGuardEngine,
    prompts: list[str],
    base: SpecGuardConfig,
    *,
    target_rate: float,
    rounds: int = 8,
    progress: Progress = None,
) -> CalibrationResult:
    """Bounds from the pair's signal percentiles on `prompts`, then tau by bisection on the
    measured target-call rate (the rate rises with tau) until it is closest to `target_rate`."""
    goal = _check_goal(target_rate)
    if not prompts:
        raise InvalidInputError("calibration needs prompts")
    sig = Signals()
    keep_all = base.merged(tau=0.0, target_band=FULL_BAND)
    for p in prompts:
        records = engine.generate(p, config=keep_all).steps
        sig.add(records, [None] * len(records))
    bounded = fit_bounds(sig, base)
    gamma = sig.gamma(bounded)
    fused = sorted(sig.fused(bounded.beta, bounded, gamma))
    lo, hi = 0.0, max(1.0, fused[-1] + 1e-6)
    tau = percentile(fused, goal) if 0.0 < goal < 1.0 else (lo if goal == 0.0 else hi)
    tried: list[Setting] = []
    for _ in range(rounds):
        _, rate, _ = _measure(engine, bounded.merged(tau=tau), prompts=prompts)
        tried.append(Setting(bounded.beta, round(tau, 4), _share_below(fused, tau), gamma))
        tried[-1].target_call_rate = rate
        if progress:
            progress("round")
        if abs(rate - goal) < 0.01:
            break
        lo, hi = (tau, hi) if rate < goal else (lo, tau)
        tau = (lo + hi) / 2
    chosen = min(tried, key=lambda c: abs((c.target_call_rate or 0.0) - goal))
    return CalibrationResult(
        config=bounded.merged(tau=chosen.tau),
        chosen=chosen,
        candidates=tried,
        objective={"target_rate": goal, "labels": 0},
        dev_items=len(prompts),
    )


def _share_below(fused: list[float], tau: float) -> float:
    return sum(r < tau for r in fused) / max(len(fused), 1)

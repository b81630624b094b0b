"""The calibration shortlist and the target-verified judge's fused scores, on hand-made steps."""

import pytest

from specguard_integrations import SpecGuardConfig
from specguard_integrations.bench.calibrate import Setting, Signals, _shortlist, fit_bounds
from specguard_integrations.bench.runner import percentile


def test_under_a_cap_the_shortlist_spans_the_rates_within_it():
    cands = [
        Setting(1.0, tau, rate, None, bad)
        for tau, rate, bad in [
            (0.1, 0.05, 0.6),
            (0.2, 0.10, 0.0),  # a judge that separates: nothing wrong kept at a low rate
            (0.3, 0.30, 0.0),
            (0.35, 0.31, 0.1),  # same bucket as 0.30, more kept wrong: not shortlisted first
            (0.4, 0.45, 0.0),
            (0.5, 0.50, 0.0),
            (0.9, 0.80, 0.0),  # over the cap
        ]
    ]
    short = _shortlist(cands, 0.5, 0.5, 4)
    assert [c.predicted_target_rate for c in short] == [0.05, 0.10, 0.45, 0.50]
    # the old rule (fewest bad accepts first, then the rate) would have kept only 0.1-0.5
    assert cands[1] in short and cands[6] not in short
    assert _shortlist(cands, 0.01, 0.01, 2) == [cands[0], cands[1]]  # none fits: by the key
    # a rate goal: the closest predicted rates
    assert [c.predicted_target_rate for c in _shortlist(cands, None, 0.3, 2)] == [0.30, 0.31]


def test_target_scores_get_their_own_bounds_and_weight():
    sig = Signals()
    for i in range(20):
        sig.confidence.append(-0.1 * i)
        sig.grounding.append(None)
        sig.target.append(-0.05 * (i % 7))
        sig.labels.append(i < 15)
    base = SpecGuardConfig(judge="target", target_weight=0.5)
    cfg = fit_bounds(sig, base)
    # the 5th and 95th percentiles of the target's scores
    assert cfg.target_bounds == (percentile(sig.target, 0.05), percentile(sig.target, 0.95))
    assert cfg.target_bounds == pytest.approx((-0.3, 0.0))
    fused = sig.fused(1.0, cfg, gamma=0.5)
    t_lo, t_hi = cfg.target_bounds
    c_lo, c_hi = cfg.confidence_bounds
    for r, c, t in zip(fused, sig.confidence, sig.target, strict=True):
        tn = min(1.0, max(0.0, (t - t_lo) / (t_hi - t_lo)))
        cn = min(1.0, max(0.0, (c - c_lo) / (c_hi - c_lo)))
        assert r == pytest.approx(0.5 * tn + 0.5 * cn)
    assert sig.fused(1.0, cfg) != fused  # without gamma: the draft's score alone


def test_the_band_is_where_the_draft_agrees_with_the_target():
    from specguard_integrations.bench.calibrate import fit_band

    # r_draft = l~ with bounds (-1, 0): confidence -0.05 * i -> 1 - 0.05 i; the target's score
    # keeps every step with r_draft >= 0.7 and one at 0.4, and nothing else
    sig = Signals()
    keep = {0.4}
    for i in range(20):
        r = round(1 - 0.05 * i, 2)
        t = -0.1 if r >= 0.7 or r in keep else -2.9
        sig.confidence.append(-0.05 * i)
        sig.grounding.append(None)
        sig.target.append(t)
        sig.labels.append(True)
    cfg = SpecGuardConfig(
        judge="target",
        beta=1.0,
        tau=0.5,
        confidence_bounds=(-1.0, 0.0),
        target_bounds=(-3.0, 0.0),
    )
    lo, hi = fit_band(sig, cfg)
    # above 0.65 every step is kept; going lower adds 0.65 (rejected): 1 in 8 disagree (> 2%)
    assert hi == pytest.approx(0.65)
    # below 0.4 every step is rejected; at 0.45 the kept 0.4 is 1 in 8 (> 2%)
    assert lo == pytest.approx(0.4)
    # a target that agrees with nothing the draft says: no band
    flip = Signals(sig.confidence, sig.grounding, [-2.9 if t == -0.1 else -0.1 for t in sig.target])
    flip.labels = sig.labels
    assert fit_band(flip, cfg) == (0.0, 1.0)

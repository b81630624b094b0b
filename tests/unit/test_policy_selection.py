import math

import pytest
import torch

from specguard_integrations.engine.policy import decide, fuse, normalise
from specguard_integrations.engine.selection import consistency_scores, select


def test_normalise_clips_to_unit_interval():
    assert normalise(-3.0, (-6.0, 0.0)) == pytest.approx(0.5)
    assert normalise(-9.0, (-6.0, 0.0)) == 0.0
    assert normalise(1.0, (-6.0, 0.0)) == 1.0


def test_fusion_is_a_weighted_sum_against_tau():
    # l = -3 -> l~ = 0.5; g = 0.8 -> g~ = 0.8; r = 0.3*0.5 + 0.7*0.8 = 0.71
    kw = dict(beta=0.3, confidence_bounds=(-6.0, 0.0), grounding_bounds=(0.0, 1.0))
    v = decide(-3.0, 0.8, tau=0.7, **kw)
    assert v.fused == pytest.approx(0.71)
    assert v.accept
    assert not decide(-3.0, 0.8, tau=0.72, **kw).accept
    # weighted sum, not AND: very low confidence is compensated by strong grounding
    v = decide(-6.0, 1.0, tau=0.7, **kw)
    assert v.confidence_norm == 0.0 and v.fused == pytest.approx(0.7) and v.accept


def test_without_grounding_the_fused_score_is_confidence():
    assert fuse(0.4, None, 0.3) == 0.4
    v = decide(-3.0, None, beta=0.3, tau=0.5, confidence_bounds=(-6, 0), grounding_bounds=(0, 1))
    assert v.grounding_norm is None and v.fused == pytest.approx(0.5) and v.accept


def test_selector_picks_the_medoid():
    e = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    s01 = 0.9 / math.hypot(0.9, 0.1)
    s12 = 0.1 / math.hypot(0.9, 0.1)
    expected = [math.exp(s01) + 1.0, math.exp(s01) + math.exp(s12), 1.0 + math.exp(s12)]
    assert consistency_scores(e).tolist() == pytest.approx(expected, rel=1e-5)
    assert select(e) == 1


def test_selector_with_one_candidate():
    assert select(torch.ones(1, 4)) == 0

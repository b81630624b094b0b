"""Signal functions on hand-made tensors; every expected number is worked out in the comments."""

import math

import pytest
import torch

from specguard_integrations.engine import signals


def test_token_logprobs_and_confidence_take_the_minimum_raw_logprob():
    # row 0: uniform over 3 -> log(1/3); row 1: softmax([0, ln 3, 0]) = [1/5, 3/5, 1/5]
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(3.0), 0.0]])
    tokens = torch.tensor([2, 1])
    lp = signals.token_logprobs(logits, tokens)
    assert lp.tolist() == pytest.approx([math.log(1 / 3), math.log(3 / 5)], abs=1e-6)
    # min, not mean: -1.0986, not (-1.0986 - 0.5108) / 2
    assert signals.confidence(lp) == pytest.approx(math.log(1 / 3), abs=1e-6)


def test_confidence_of_empty_step_is_an_error():
    with pytest.raises(ValueError, match="empty step"):
        signals.confidence(torch.tensor([]))


def _two_head_rows():
    # rows of positions 1 and 2 of a 3-token sequence (Tq=2, Tk=3), two heads
    return torch.tensor(
        [
            [[0.7, 0.3, 0.0], [0.6, 0.395, 0.005]],  # head 0
            [[0.995, 0.005, 0.0], [0.2, 0.009, 0.791]],  # head 1
        ]
    )


def test_process_attention_cuts_below_001_then_averages_heads():
    a = signals.process_attention(_two_head_rows(), cut=0.01)
    # cut: head0 row1 loses 0.005, head1 row0 loses 0.005, head1 row1 loses 0.009
    # row 0: mean([0.7, 0.3, 0], [0.995, 0, 0]) = [0.8475, 0.15, 0]
    # row 1: mean([0.6, 0.395, 0], [0.2, 0, 0.791]) = [0.4, 0.1975, 0.3955]
    assert a[0].tolist() == pytest.approx([0.8475, 0.15, 0.0])
    assert a[1].tolist() == pytest.approx([0.4, 0.1975, 0.3955])


def test_process_attention_without_cut_keeps_small_entries():
    a = signals.process_attention(_two_head_rows(), cut=0.0)
    assert a[1].tolist() == pytest.approx([0.4, 0.202, 0.398])


def test_process_attention_options_renormalise_and_residual():
    a = signals.process_attention(_two_head_rows(), cut=0.01, renormalize=True)
    assert a[0].tolist() == pytest.approx([0.8475 / 0.9975, 0.15 / 0.9975, 0.0])
    r = signals.process_attention(_two_head_rows(), cut=0.01, residual=True)
    # row 0 is position 1: 0.5 * [0.8475, 0.15, 0] + 0.5 * e_1
    assert r[0].tolist() == pytest.approx([0.42375, 0.575, 0.0])
    # row 1 is position 2: 0.5 * [0.4, 0.1975, 0.3955] + 0.5 * e_2
    assert r[1].tolist() == pytest.approx([0.2, 0.09875, 0.69775])


A1 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])  # lower layer
A2 = torch.tensor([[1.0, 0.0, 0.0], [0.4, 0.6, 0.0], [0.1, 0.1, 0.8]])  # upper layer


def test_rollout_is_upper_times_lower():
    r = signals.rollout([A1, A2])
    # R = A2 · A1
    # row 1 = 0.4*[1,0,0] + 0.6*[0.5,0.5,0] = [0.7, 0.3, 0]
    # row 2 = 0.1*[1,0,0] + 0.1*[0.5,0.5,0] + 0.8*[0.2,0.3,0.5] = [0.31, 0.29, 0.4]
    expected = torch.tensor([[1, 0, 0], [0.7, 0.3, 0], [0.31, 0.29, 0.4]])
    assert torch.allclose(r, expected, atol=1e-6)


def test_grounding_counts_only_context_columns():
    # context = positions 0 and 1, step = position 2: G(2) = 0.31 + 0.29
    g = signals.grounding_from_matrices([A1, A2], torch.tensor([1.0, 1.0, 0.0]))
    assert float(g[2]) == pytest.approx(0.6)
    # context = position 0 only, step = positions 1, 2: G = [0.7, 0.31], g = min = 0.31
    g = signals.grounding_from_matrices([A1, A2], torch.tensor([1.0, 0.0, 0.0]))
    assert g[1:].tolist() == pytest.approx([0.7, 0.31])


def test_incremental_mass_equals_matrix_rollout():
    # position 0 is cached context: m0 = 1, m1 = A1[0]·m0 = 1, m2 = A2[0]·m1 = 1
    prev = [torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([1.0])]
    rows = [A1[1:], A2[1:]]
    mass = signals.propagate_mass(rows, prev, torch.tensor([0.0, 0.0]))
    # m1 = A1[1:]·[1,0,0] = [0.5, 0.2]; m2 = A2[1:]·[1, 0.5, 0.2] = [0.7, 0.31]
    assert mass[1].tolist() == pytest.approx([0.5, 0.2])
    assert mass[2].tolist() == pytest.approx([0.7, 0.31])
    assert signals.grounding(mass) == pytest.approx(0.31)


def test_incremental_mass_matches_reference_on_random_causal_attention():
    torch.manual_seed(0)
    t, heads, layers, ctx_len = 9, 3, 3, 5
    raw = []
    for _ in range(layers):
        logits = torch.randn(heads, t, t).masked_fill(torch.ones(t, t).triu(1).bool(), -1e9)
        raw.append(torch.softmax(logits, -1))
    full = [signals.process_attention(a) for a in raw]
    ctx = torch.tensor([1.0] * ctx_len + [0.0] * (t - ctx_len))
    expected = signals.grounding_from_matrices(full, ctx)[ctx_len:]
    # context positions first (as context), then the step rows with the step as non-context
    prev = signals.propagate_mass(
        [signals.process_attention(a[:, :ctx_len, :ctx_len]) for a in raw],
        [torch.zeros(0)] * (layers + 1),
        torch.ones(ctx_len),
    )
    step = signals.propagate_mass(
        [signals.process_attention(a[:, ctx_len:, :]) for a in raw], prev, torch.zeros(t - ctx_len)
    )
    assert step[-1].tolist() == pytest.approx(expected.tolist(), abs=1e-6)


# ---------------------------------------------------------------- variants (signal study)
def test_heads_joined_by_mean_max_or_chosen_indices():
    rows = _two_head_rows()
    # max over heads: row 0 = [0.995, 0.3, 0.0], row 1 = [0.6, 0.395, 0.791]
    assert signals.join_heads(rows, "max")[0].tolist() == pytest.approx([0.995, 0.3, 0.0])
    assert signals.join_heads(rows, "max")[1].tolist() == pytest.approx([0.6, 0.395, 0.791])
    # chosen heads (1,): head 1 alone
    assert signals.join_heads(rows, (1,))[1].tolist() == pytest.approx([0.2, 0.009, 0.791])
    assert signals.join_heads(rows, "mean")[0].tolist() == pytest.approx([0.8475, 0.1525, 0.0])
    with pytest.raises(ValueError, match="no head"):
        signals.join_heads(rows, (5,))
    cut = signals.process_attention(rows, cut=0.01, heads="max")
    assert cut[1].tolist() == pytest.approx([0.6, 0.395, 0.791])  # the cut comes first


def test_grounding_aggregates_over_the_step_tokens():
    mass = [torch.zeros(4), torch.tensor([0.9, 0.2, 0.6, 0.5])]  # G(t) of a 4-token step
    assert signals.grounding(mass) == pytest.approx(0.2)  # min: the paper
    assert signals.grounding(mass, "mean") == pytest.approx(0.55)  # (0.9+0.2+0.6+0.5)/4
    # quantile 0.25, linear: sorted [0.2, 0.5, 0.6, 0.9], position 0.75 -> 0.2 + 0.75 * 0.3
    assert signals.grounding(mass, "quantile", q=0.25) == pytest.approx(0.425)
    content = torch.tensor([True, False, True, False])  # tokens 0 and 2 carry content
    assert signals.grounding(mass, "content_min", content=content) == pytest.approx(0.6)
    nothing = torch.zeros(4, dtype=torch.bool)  # no content token: all tokens count
    assert signals.grounding(mass, "content_min", content=nothing) == pytest.approx(0.2)


def test_content_tokens_are_numbers_and_names():
    pieces = [" The", " 12", " apples", " Tom", "'s", ",", " x3", " I", "\n", " Eve"]
    assert signals.content_tokens(pieces) == [
        True,
        True,
        False,
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]


def test_confidence_mean_variant():
    lp = torch.tensor([-0.1, -2.0, -0.3])
    assert signals.confidence(lp, "mean") == pytest.approx(-0.8)
    assert signals.confidence(lp, "min") == pytest.approx(-2.0)


def test_prompt_only_target_set_from_the_matrices():
    # context = the prompt (position 0); position 1 was an accepted step, position 2 the step:
    # with the prompt-only target set, G(2) = R[2, 0] = 0.31 instead of 0.31 + 0.29
    g = signals.grounding_from_matrices([A1, A2], torch.tensor([1.0, 0.0, 0.0]))
    assert float(g[2]) == pytest.approx(0.31)

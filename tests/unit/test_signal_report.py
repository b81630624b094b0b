"""The study's numbers on hand-made rows, and the free-form checker the real pair is labelled
with."""

import pytest

from specguard_integrations.bench.signal_report import auroc_ci, choose_heads, fuse
from specguard_integrations.bench.signal_study import StepRow
from specguard_integrations.bench.suites import load_suite
from specguard_integrations.tasks.base import StepVerdict
from specguard_integrations.tasks.freeform import check_equations, word_problems


def row(label, split, **values):
    return StepRow("f", 0, 0, [1], 1, [2], "", label, split, dict(values))


def test_auroc_ci_of_a_perfect_and_a_reversed_score():
    labels = [True, True, False, False, True, False]
    scores = [0.9, 0.8, 0.1, 0.2, 0.7, 0.3]
    assert auroc_ci(scores, labels, boots=200) == (1.0, 1.0, 1.0)
    point, lo, hi = auroc_ci([-s for s in scores], labels, boots=200)
    assert point == 0.0 and lo == 0.0 and hi == 0.0
    assert auroc_ci([0.5, 0.4], [True, True]) == (None, None, None)
    # one swapped pair out of 9: 8/9, the interval spans it
    point, lo, hi = auroc_ci([0.9, 0.8, 0.1, 0.2, 0.25, 0.3], labels, boots=500)
    assert point == pytest.approx(8 / 9) and lo < point <= hi


def test_fuse_gains_when_grounding_separates_what_confidence_does_not():
    # confidence is uninformative (constant); g separates the labels on both splits
    rows = [
        row(y, split, conf_min=-1.0, g=(0.8 if y else 0.2) + i / 100)
        for split in ("dev", "test")
        for i, y in enumerate([True, False] * 5)
    ]
    f = fuse(rows, "g", boots=200)
    assert f.beta == 0.0  # the first beta on dev with the best AUROC: all weight on g
    assert f.confidence_auroc == 0.5 and f.test_auroc == 1.0 and f.gain == 0.5
    assert f.gain_low is not None and f.gain_low > 0


def test_fuse_finds_no_gain_from_a_noise_variant():
    rows = [
        row(y, split, conf_min=(-0.1 if y else -2.0), g=0.5)
        for split in ("dev", "test")
        for y in [True, False] * 5
    ]
    f = fuse(rows, "g", boots=100)
    assert f.confidence_auroc == 1.0 and f.test_auroc == 1.0 and f.gain == 0.0


def test_choose_heads_ranks_heads_on_dev_only():
    rows = []
    for i, y in enumerate([True, False] * 4):
        good, bad = (1.0 if y else 0.0), (0.0 if y else 1.0)
        rows.append(row(y, "dev", **{"head:2.0": bad, "head:2.1": good, "head:2.3": good - i}))
        # on test head 0 would win: never looked at
        rows.append(row(y, "test", **{"head:2.0": good, "head:2.1": bad, "head:2.3": bad}))
    assert choose_heads(rows, top=1) == (1,)
    assert choose_heads(rows, top=2) == (1, 3)


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("She has 12 + 7 = 19 pens.", True),
        ("So 19 - 4 = 15, and 3 * 6 = 18.", True),
        ("So 19 - 4 = 15, and 3 * 6 = 17.", False),  # one wrong equation makes the step wrong
        ("Each gets 84 / 7 = 12 and 2 + 3 * 4 = 14.", True),  # * before +
        ("$1,200 x 2 = $2,400", True),
        ("10 / 0 = 0", False),
        ("7 + 5 = 13", False),
        ("He buys some more apples.", None),
    ],
)
def test_check_equations(text, verdict):
    assert check_equations(text) is verdict


def test_word_problems_are_deterministic_and_their_answers_follow_the_text():
    items = word_problems(30, seed=4)
    assert [i.prompt for i in items] == [i.prompt for i in word_problems(30, seed=4)]
    assert [i.prompt for i in items] != [i.prompt for i in word_problems(30, seed=5)]
    for item in items:
        assert item.check_step(0, f"So x = {item.answer}.").well_formed is False
        assert item.correct(f"...\n\nAnswer: {item.answer}")
        assert item.check_step(2, f" Answer: {item.answer}\n") == StepVerdict(True, True)
        assert item.check_step(2, f"2 + 2 = 4. Answer: {int(item.answer) + 1}") == StepVerdict(
            False, True
        )
        assert item.check_step(2, f"2 + 2 = 5. Answer: {item.answer}") == StepVerdict(False, True)
        assert not item.correct(f"Answer: {int(item.answer) + 1}")
    assert {i.family for i in load_suite("words", limit=5, offset=4)} == {"wordproblem"}
    assert [i.prompt for i in load_suite("words", limit=5, offset=4)] == [
        i.prompt for i in items[:5]
    ]


def test_the_worked_examples_steps_check():
    from specguard_integrations.tasks.freeform import SHOTS

    steps = [s for s in SHOTS.split("\n\n") if "=" in s]
    assert len(steps) == 4 and all(check_equations(s) for s in steps)

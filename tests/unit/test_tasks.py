"""Task suites: determinism, disjoint splits, and checkers on hand-written steps."""

import random

import pytest

from specguard_integrations.tasks import FAMILIES, extract_answer, make_split
from specguard_integrations.tasks.base import Item, calculator


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_splits_are_deterministic_and_disjoint(family):
    a = make_split(family, "test", 50)
    b = make_split(family, "test", 50)
    assert [i.prompt for i in a] == [i.prompt for i in b]
    train = make_split(family, "train", 2000)
    held = {i.prompt for i in make_split(family, "test", 500)}
    assert not held & {i.prompt for i in train}
    assert len({i.prompt for i in train}) > 1500  # varied, not one template repeated


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gold_steps_pass_their_own_checker(family):
    for item in make_split(family, "test", 30):
        for i, step in enumerate(item.steps):
            v = item.check_step(i, step)
            assert v.ok and v.well_formed, (item.prompt, i, step)
        assert item.correct(item.target_text)


def _item(family, prompt, steps, answer, **kw):
    return Item(family, prompt, steps, answer, **kw)


def test_arithmetic_checker_on_hand_written_steps():
    item = _item(
        "arithmetic",
        "Question: Ann has 3 apples. Ann buys 4 more. Ann doubles them. How many?\n",
        ["3 + 4 = 7\n\n", "7 * 2 = 14\n\n", "Answer: 14\n"],
        "14",
        meta={"values": [7, 14]},
    )
    assert item.check_step(0, "3 + 4 = 7\n\n").ok
    wrong_sum = item.check_step(0, "3 + 4 = 8\n\n")
    assert not wrong_sum.ok and wrong_sum.well_formed
    assert not item.check_step(1, "7 + 2 = 9\n\n").ok  # right arithmetic, wrong operation
    garbled = item.check_step(1, "seven times two\n\n")
    assert not garbled.ok and not garbled.well_formed
    assert item.check_step(2, "Answer: 14\n").ok
    assert not item.check_step(2, "Answer: 15\n").ok


def test_multihop_checker_on_hand_written_steps():
    item = _item(
        "multihop",
        "Facts: The friend of Ann is Bob. The friend of Bob is Cy. The friend of Dan is Ann.\n"
        "Question: Who is the friend of the friend of Ann?\n",
        ["The friend of Ann is Bob.\n\n", "The friend of Bob is Cy.\n\n", "Answer: Cy\n"],
        "Cy",
    )
    assert item.check_step(0, "The friend of Ann is Bob.\n\n").ok
    assert item.check_step(0, "The friend of Ann is Bob.").ok  # boundary whitespace aside
    v = item.check_step(0, "The friend of Dan is Ann.\n\n")  # a true fact, but not the chain
    assert not v.ok and v.well_formed
    assert not item.check_step(1, "The friend of Bob is Dan.\n\n").ok
    assert not item.check_step(1, "The friend of Bob is\n\n").well_formed
    assert not item.check_step(1, "Bob's friend is Cy.\n\n").well_formed
    assert item.check_step(2, "Answer: Cy\n").ok


def test_multihop_items_are_chains_through_the_facts():
    from specguard_integrations.tasks.base import multihop_item

    for seed in range(20):
        item = multihop_item(random.Random(seed), 3, 4)
        assert len(item.meta["facts"]) == 7 and len(item.steps) == 4
        subject = item.prompt.split("friend of ")[-1].rstrip("?\n")
        for step in item.steps[:-1]:
            assert step.strip() in item.meta["facts"] and step.startswith(
                f"The friend of {subject} "
            )
            subject = step.split(" is ")[1].rstrip(".\n")
        assert item.answer == subject and item.correct(item.target_text)


def test_equation_checker_on_hand_written_steps():
    item = _item(
        "equation",
        "Question: Solve 3x + 5 = 20 for x.\n",
        ["3x = 20 - 5 = 15\n\n", "x = 15 / 3 = 5\n\n", "Answer: 5\n"],
        "5",
    )
    assert item.check_step(0, "3x = 20 - 5 = 15\n\n").ok
    assert not item.check_step(0, "3x = 20 + 5 = 25\n\n").ok
    assert not item.check_step(1, "x = 15 / 3 = 6\n\n").ok
    assert not item.check_step(1, "x is five\n\n").well_formed


def test_tools_checker_and_the_real_calculator():
    assert calculator("37 * 12") == "444" and calculator("444 - 50") == "394"
    with pytest.raises(ValueError, match="cannot evaluate"):
        calculator("2 ** 8")
    item = make_split("tools", "test", 1)[0]
    good = item.steps[0]
    assert item.check_step(0, good).ok
    bad = good.replace("Action Input: ", "Action Input: 1")
    v = item.check_step(0, bad)
    assert not v.ok and v.well_formed
    assert item.check_step(2, f"Thought: done\nFinal Answer: {item.answer}\n").ok
    assert not item.check_step(2, "Thought: done\nFinal Answer: -1\n").ok


def test_extract_answer():
    assert extract_answer("1 + 1 = 2\n\nAnswer: 2\n") == "2"
    assert extract_answer("Thought: done\nFinal Answer: 55\n") == "55"
    assert extract_answer("no answer here") is None
    assert extract_answer("Answer: 3\nAnswer: 4.") == "4"

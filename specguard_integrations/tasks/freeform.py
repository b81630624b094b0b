"""Arithmetic word problems for real pretrained models, with a checker for free-form steps.

A real model does not write the bundled pair's step format, so its steps are labelled by what
can be checked in any text: every ``a op b = c`` in a step is evaluated exactly (fractions, no
``eval``), and an ``Answer:`` line against the known answer; a step is correct when all its
checks hold, incorrect when one does not, and unlabelled when it has none.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from .base import NAMES, Item, StepVerdict

_NUM = r"\$?\d+(?:,\d{3})*(?:\.\d+)?"
_EQUATION = re.compile(
    rf"({_NUM})\s*([+\-*/x×÷])\s*({_NUM})(?:\s*([+\-*/x×÷])\s*({_NUM}))?\s*=\s*({_NUM})"
)
_OPS = {"+": "+", "-": "-", "*": "*", "x": "*", "×": "*", "/": "/", "÷": "/"}


def _value(text: str) -> Fraction:
    return Fraction(text.replace("$", "").replace(",", ""))


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    op = _OPS[op]
    if op == "/":
        return None if b == 0 else a / b
    return a + b if op == "+" else a - b if op == "-" else a * b


def check_equations(text: str) -> bool | None:
    """True when every ``a op b [op c] = d`` in `text` holds (left to right, ``*`` and ``/``
    before ``+`` and ``-``), False when one does not, None when there is none."""
    found = _EQUATION.findall(text)
    if not found:
        return None
    for a, op1, b, op2, c, result in found:
        x, y = _value(a), _value(b)
        if op2:
            z = _value(c)
            if _OPS[op2] in "*/" and _OPS[op1] in "+-":
                inner = _apply(y, op2, z)
                value = None if inner is None else _apply(x, op1, inner)
            else:
                first = _apply(x, op1, y)
                value = None if first is None else _apply(first, op2, z)
        else:
            value = _apply(x, op1, y)
        if value is None or abs(value - _value(result)) > Fraction(1, 100):
            return False
    return True


class WordProblem(Item):
    """An item whose steps are labelled by `check_equations` and answered by its last number."""

    @property
    def segmenter(self) -> str:
        return "blank_line"

    def check_step(self, i: int, text: str) -> StepVerdict:
        """Its equations (`check_equations`) and, in an ``Answer:`` step, the answer."""
        checks = [check_equations(text)]
        if "Answer:" in text:
            checks.append(self.correct(text.split("Answer:", 1)[1]))
        known = [c for c in checks if c is not None]
        return StepVerdict(bool(known) and all(known), bool(known))

    def step_kind(self, text: str) -> str:
        """Which check labels the step: ``answer`` (an Answer line) or ``equation``."""
        return "answer" if "Answer:" in text else "equation"

    def correct(self, completion: str) -> bool:
        numbers = re.findall(r"-?\d+(?:\.\d+)?", completion.replace(",", ""))
        return bool(numbers) and numbers[-1].rstrip("0").rstrip(".") == self.answer


# two worked examples: the format (one equation per blank-line step, an Answer line) is shown,
# the numbers of the asked problem are the model's own work
SHOTS = (
    "Question: Ann has 12 pens. Ann buys 7 more, then gives 4 to Ben. How many pens does Ann"
    " have now?\n"
    "Ann starts with 12 pens and buys 7 more: 12 + 7 = 19.\n\n"
    "Then Ann gives 4 to Ben: 19 - 4 = 15.\n\n"
    "Answer: 15\n\n"
    "Question: Joe buys 3 bags of nuts with 6 nuts in each bag, and already has 5. How many nuts"
    " does Joe have?\n"
    "The bags hold 3 * 6 = 18 nuts.\n\n"
    "With the 5 he has: 18 + 5 = 23.\n\n"
    "Answer: 23\n\n"
)

_THINGS = ("apples", "books", "coins", "stamps", "marbles", "pencils", "cookies", "cards")


def word_problems(n: int, seed: int = 0) -> list[WordProblem]:
    """`n` two- or three-operation word problems with known answers (deterministic)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, other, thing = rng.choice(NAMES), rng.choice(NAMES), rng.choice(_THINGS)
        a, b, c = rng.randint(3, 40), rng.randint(2, 25), rng.randint(2, 9)
        kind = rng.randrange(3)
        if kind == 0:
            text = (
                f"{name} has {a} {thing}. {name} buys {b} more, then gives {c} to {other}. "
                f"How many {thing} does {name} have now?"
            )
            answer = a + b - c
        elif kind == 1:
            text = (
                f"{name} buys {c} boxes of {thing} with {b} {thing} in each box, and already "
                f"has {a}. How many {thing} does {name} have?"
            )
            answer = c * b + a
        else:
            d = c * rng.randint(2, 12)
            text = (
                f"{name} shares {d} {thing} equally among {c} friends and keeps {a} more "
                f"{thing} for later. How many {thing} does each friend get, plus the ones kept?"
            )
            answer = d // c + a
        out.append(WordProblem("wordproblem", SHOTS + f"Question: {text}\n", [], str(answer)))
    return out

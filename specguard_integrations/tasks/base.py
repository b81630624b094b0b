"""Task families: generators, answer extractor and step checkers."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from ..errors import InvalidInputError
from ..segmentation import extract_answer

Split = Literal["train", "test"]
HELD_OUT_SIZE = 500  # held-out items per family; train never contains their prompts
_SPLIT_BASE = {"train": 0, "test": 1_000_000_007}

NAMES = (
    "Ann",
    "Bob",
    "Cal",
    "Dee",
    "Eve",
    "Fay",
    "Gus",
    "Hal",
    "Ida",
    "Jon",
    "Kim",
    "Lea",
    "Max",
    "Ned",
    "Ola",
    "Pam",
    "Quin",
    "Rex",
    "Sue",
    "Tom",
    "Uma",
    "Val",
    "Wes",
    "Xia",
    "Yul",
    "Zoe",
    "Amy",
    "Ben",
    "Cy",
    "Dan",
)
ITEMS = ("apples", "coins", "books", "stamps", "cards", "shells", "pens", "eggs")


@dataclass(frozen=True)
class StepVerdict:
    ok: bool  # the step is correct
    well_formed: bool  # the checker could parse it


@dataclass
class Item:
    family: str
    prompt: str
    steps: list[str]  # gold steps, each ending with its boundary
    answer: str
    # tool family: the observation text the real tool appends after gold step i
    observations: dict[int, str] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def target_text(self) -> str:
        """The gold completion, observations included."""
        out = []
        for i, s in enumerate(self.steps):
            out.append(s)
            if i in self.observations:
                out.append(self.observations[i])
        return "".join(out)

    @property
    def segmenter(self) -> str:
        """The step boundary of this item's family (a `SpecGuardConfig.segmenter` value)."""
        return get_family(self.family).segmenter

    @property
    def has_step_labels(self) -> bool:
        """Whether `check_step` can label steps (external suites only check the answer)."""
        return True

    def check_step(self, i: int, text: str) -> StepVerdict:
        return get_family(self.family).check(self, i, text)

    def correct(self, completion: str) -> bool:
        return extract_answer(completion) == self.answer


def _answer_step(item: Item, text: str, marker: str = "Answer:") -> StepVerdict:
    m = re.fullmatch(rf"\s*{re.escape(marker)}\s*([^\n]*)\s*", text)
    if not m:
        return StepVerdict(False, False)
    return StepVerdict(m.group(1).strip().rstrip(".") == item.answer, True)


# ---------------------------------------------------------------- arithmetic (GSM8K-like)
def _gen_arithmetic(rng: random.Random) -> Item:
    name, thing = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, 20)
    sentences = [f"{name} has {value} {thing}."]
    steps, values = [], []
    for _ in range(rng.randint(2, 3)):
        kind = rng.choice(("add", "sub", "mul") if value <= 30 else ("add", "sub"))
        if kind == "add":
            n = rng.randint(1, 20)
            sentences.append(rng.choice((f"{name} buys {n} more.", f"{name} finds {n} more.")))
            new, expr = value + n, f"{value} + {n}"
        elif kind == "sub" and value > 1:
            n = rng.randint(1, value - 1)
            sentences.append(rng.choice((f"{name} gives away {n}.", f"{name} loses {n}.")))
            new, expr = value - n, f"{value} - {n}"
        else:
            n = rng.randint(2, 3)
            word = {2: "doubles", 3: "triples"}[n]
            sentences.append(f"{name} {word} them.")
            new, expr = value * n, f"{value} * {n}"
        steps.append(f"{expr} = {new}\n\n")
        values.append(new)
        value = new
    prompt = f"Question: {' '.join(sentences)} How many {thing} does {name} have now?\n"
    steps.append(f"Answer: {value}\n")
    return Item("arithmetic", prompt, steps, str(value), meta={"values": values})


def _check_arithmetic(item: Item, i: int, text: str) -> StepVerdict:
    if i >= len(item.steps) - 1 or text.lstrip().startswith("Answer:"):
        return _answer_step(item, text)
    m = re.fullmatch(r"\s*(\d+) ([+\-*]) (\d+) = (\d+)\s*", text)
    if not m:
        return StepVerdict(False, False)
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    true = {"+": a + b, "-": a - b, "*": a * b}[op]
    values = item.meta["values"]
    assert isinstance(values, list)
    return StepVerdict(true == c and c == values[i] and text.strip() == item.steps[i].strip(), True)


# ---------------------------------------------------------------- multi-hop facts
def _gen_multihop(rng: random.Random) -> Item:
    return multihop_item(rng, rng.randint(2, 3), 4)


def multihop_item(rng: random.Random, hops: int, distractors: int) -> Item:
    """A chain of `hops` friend facts among `distractors` others, shuffled."""
    names = rng.sample(NAMES, hops + 1 + distractors)
    chain, rest = names[: hops + 1], names[hops + 1 :]
    # "The friend of X is Y.": every name a space-prefixed token, and the subject one token
    # before the object, in the facts and in the steps alike (the lookup is a 2-gram copy)
    facts = [f"The friend of {chain[j]} is {chain[j + 1]}." for j in range(hops)]
    distract = [f"The friend of {rest[j]} is {rng.choice(names)}." for j in range(len(rest))]
    all_facts = facts + distract
    rng.shuffle(all_facts)
    question = "the friend of " * hops + chain[0]
    prompt = f"Facts: {' '.join(all_facts)}\nQuestion: Who is {question}?\n"
    steps = [f"{f}\n\n" for f in facts] + [f"Answer: {chain[-1]}\n"]
    return Item("multihop", prompt, steps, chain[-1], meta={"facts": all_facts})


_HOP = re.compile(r"\s*The friend of (\w+) is (\w+)\.\s*")


def _check_multihop(item: Item, i: int, text: str) -> StepVerdict:
    if i >= len(item.steps) - 1 or text.lstrip().startswith("Answer:"):
        return _answer_step(item, text)
    m = _HOP.fullmatch(text)
    if not m:
        return StepVerdict(False, False)
    gold = _HOP.fullmatch(item.steps[i])
    return StepVerdict(gold is not None and m.groups() == gold.groups(), True)


# ---------------------------------------------------------------- linear equations
def _gen_equation(rng: random.Random) -> Item:
    x, a, b = rng.randint(1, 12), rng.randint(2, 9), rng.randint(1, 20)
    if rng.random() < 0.5:
        c = a * x + b
        prompt = f"Question: Solve {a}x + {b} = {c} for x.\n"
        first = f"{a}x = {c} - {b} = {a * x}\n\n"
    else:
        c = a * x - b
        prompt = f"Question: Solve {a}x - {b} = {c} for x.\n"
        first = f"{a}x = {c} + {b} = {a * x}\n\n"
    steps = [first, f"x = {a * x} / {a} = {x}\n\n", f"Answer: {x}\n"]
    return Item("equation", prompt, steps, str(x))


def _check_equation(item: Item, i: int, text: str) -> StepVerdict:
    if i >= len(item.steps) - 1 or text.lstrip().startswith("Answer:"):
        return _answer_step(item, text)
    m1 = re.fullmatch(r"\s*(\d+)x = (-?\d+) ([+\-]) (\d+) = (-?\d+)\s*", text)
    m2 = re.fullmatch(r"\s*x = (-?\d+) / (\d+) = (-?\d+)\s*", text)
    if not (m1 or m2):
        return StepVerdict(False, False)
    return StepVerdict(text.strip() == item.steps[i].strip(), True)


# ---------------------------------------------------------------- tool use (ReAct calculator)
def calculator(expression: str) -> str:
    """The real tool: evaluates `a op b` with integers (+, -, *)."""
    m = re.fullmatch(r"\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*", expression)
    if not m:
        raise InvalidInputError(
            f"calculator: cannot evaluate {expression!r}; use 'a + b', 'a - b', 'a * b'"
        )
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return str({"+": a + b, "-": a - b, "*": a * b}[op])


def _gen_tools(rng: random.Random) -> Item:
    a, b = rng.randint(11, 99), rng.randint(2, 9)
    op2, c = rng.choice("+-"), rng.randint(1, 50)
    first = f"{a} * {b}"
    r1 = calculator(first)
    second = f"{r1} {op2} {c}"
    r2 = calculator(second)
    prompt = f"Question: What is {a} * {b} {op2} {c}?\n"
    steps = [
        f"Thought: first {first}\nAction: calculator\nAction Input: {first}\n",
        f"Thought: then {op2} {c}\nAction: calculator\nAction Input: {second}\n",
        f"Thought: done\nFinal Answer: {r2}\n",
    ]
    obs = {0: f"Observation: {r1}\n", 1: f"Observation: {r2}\n"}
    return Item("tools", prompt, steps, r2, observations=obs)


def _check_tools(item: Item, i: int, text: str) -> StepVerdict:
    if "Final Answer:" in text:
        m = re.search(r"Final Answer:\s*([^\n]*)", text)
        ok = m is not None and m.group(1).strip() == item.answer and i == len(item.steps) - 1
        return StepVerdict(ok, m is not None)
    m = re.fullmatch(r"\s*Thought: [^\n]*\nAction: calculator\nAction Input: ([^\n]*)\n?", text)
    if not m:
        return StepVerdict(False, False)
    gold = re.search(r"Action Input: ([^\n]*)", item.steps[i]) if i < len(item.steps) else None
    return StepVerdict(gold is not None and m.group(1).strip() == gold.group(1).strip(), True)


@dataclass(frozen=True)
class Family:
    name: str
    generate: Callable[[random.Random], Item]
    check: Callable[[Item, int, str], StepVerdict]
    segmenter: str = "blank_line"


FAMILIES: dict[str, Family] = {
    "arithmetic": Family("arithmetic", _gen_arithmetic, _check_arithmetic),
    "multihop": Family("multihop", _gen_multihop, _check_multihop),
    "equation": Family("equation", _gen_equation, _check_equation),
    "tools": Family("tools", _gen_tools, _check_tools, segmenter="react"),
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown task family {name!r}; choose from {sorted(FAMILIES)}"
        ) from None


@lru_cache(maxsize=16)
def held_out_prompts(family: str) -> frozenset[str]:
    return frozenset(i.prompt for i in _generate(family, "test", HELD_OUT_SIZE, 0))


def _generate(family: str, split: Split, n: int, seed: int) -> list[Item]:
    fam = get_family(family)
    base = _SPLIT_BASE[split] + seed * 10_000_019
    return [fam.generate(random.Random(f"{family}:{base + i}")) for i in range(n)]


def make_split(family: str, split: Split, n: int, *, seed: int = 0) -> list[Item]:
    """`n` items of a family; train items never share a prompt with the held-out split."""
    if split not in _SPLIT_BASE:
        raise InvalidInputError(f"split must be 'train' or 'test', got {split!r}")
    if split == "test":
        if n > HELD_OUT_SIZE:
            raise InvalidInputError(f"the held-out split has {HELD_OUT_SIZE} items per family")
        return _generate(family, "test", n, 0)
    held = held_out_prompts(family)
    out: list[Item] = []
    start = 0
    while len(out) < n:
        batch = _generate(family, "train", n, seed + start)
        out.extend(i for i in batch if i.prompt not in held)
        start += 1
    return out[:n]


PAIR_OPS = [("+", "plus"), ("-", "minus"), ("*", "times")]


def two_computations(n: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """(question, first result, second result): two independent computations asked for in one
    question, as an agent would call a tool twice in one turn (parallel tool calls). Held out:
    the numbers come from `seed`'s own stream (training draws its own)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        (a, b), (c, d) = [(rng.randint(2, 60), rng.randint(2, 60)) for _ in range(2)]
        (o1, w1), (o2, w2) = rng.choice(PAIR_OPS), rng.choice(PAIR_OPS)
        q = rng.choice(
            [
                f"What is {a} {o1} {b}, and what is {c} {o2} {d}?",
                f"Compute {a} {w1} {b} and {c} {w2} {d}.",
            ]
        )
        out.append((q, calculator(f"{a} {o1} {b}"), calculator(f"{c} {o2} {d}")))
    return out

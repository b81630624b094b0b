"""Synthetic multi-step task suites whose every step can be checked.

Each family generates items deterministically from a seed; the train and held-out splits are
drawn from disjoint seed ranges and de-duplicated by prompt. An item carries its prompt, gold
steps, gold answer, and a checker that labels any generated step correct or incorrect, which no
public benchmark gives for free.

Families: ``arithmetic`` (GSM8K-like word problems), ``multihop`` (fact chains over a fact list in
the prompt), ``equation`` (solve a linear equation step by step) and ``tools`` (a calculator
called in ReAct form, its results coming from the real tool).
"""

from __future__ import annotations

from .base import FAMILIES, Item, StepVerdict, extract_answer, get_family, make_split

__all__ = ["FAMILIES", "Item", "StepVerdict", "extract_answer", "get_family", "make_split"]

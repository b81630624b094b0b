"""Evaluate a draft/target pair on the held-out task splits (greedy, each model alone).

Reports final-answer accuracy per family, the share of well-formed steps (the checker could
parse them), the share of correct steps, and each model's per-token latency measured in the
same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import FAMILIES, make_split
from .runner import solve_plain

if TYPE_CHECKING:
    from ..backends.local.model import LocalCausalLM


@dataclass
class ModelReport:
    name: str
    params: int
    accuracy: dict[str, float] = field(default_factory=dict)
    well_formed: dict[str, float] = field(default_factory=dict)
    step_correct: dict[str, float] = field(default_factory=dict)
    ms_per_token: float = 0.0

    @property
    def mean_accuracy(self) -> float:
        return statistics.mean(self.accuracy.values()) if self.accuracy else 0.0

    @property
    def mean_well_formed(self) -> float:
        return statistics.mean(self.well_formed.values()) if self.well_formed else 0.0


def per_token_latency(lm: LocalCausalLM, *, tokens: int = 64, repeats: int = 3) -> float:
    """Median milliseconds per generated token, greedy, KV cache on, from a task prompt."""
    import torch

    prompt = make_split("multihop", "test", 1)[0].prompt
    ids = torch.tensor([lm.encode_prompt(prompt)], device=lm.device)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            lm.model.generate(
                ids,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id or 0,
            )
            times.append((time.perf_counter() - t0) / tokens * 1e3)
    return statistics.median(times[1:])  # the first run warms up


def evaluate_model(
    lm: LocalCausalLM,
    *,
    n: int = 50,
    families: tuple[str, ...] = tuple(FAMILIES),
    progress: Callable[[], None] | None = None,
) -> ModelReport:
    report = ModelReport(lm.name, sum(p.numel() for p in lm.model.parameters()))
    for fam in families:
        solved = []
        for item in make_split(fam, "test", n):
            solved.append(solve_plain(lm, item))
            if progress:
                progress()
        verdicts = [v for s in solved for v in s.verdicts]
        report.accuracy[fam] = sum(s.correct for s in solved) / len(solved)
        report.well_formed[fam] = sum(v.well_formed for v in verdicts) / max(len(verdicts), 1)
        report.step_correct[fam] = sum(v.ok for v in verdicts) / max(len(verdicts), 1)
    report.ms_per_token = per_token_latency(lm)
    return report

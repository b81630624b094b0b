"""The signal study's numbers: AUROC per variant and family with bootstrap 95% intervals on the
dev and test splits, heads chosen on dev, and the fused score of each grounding variant with
confidence (bounds and beta fitted on dev, AUROC on test) against confidence alone.

    AUROC = P(score of a correct step > score of an incorrect one), ties counted half
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .runner import auroc, percentile

if TYPE_CHECKING:
    from .signal_rows import Selection, StepRow

BETAS = tuple(i / 10 for i in range(11))


@dataclass
class Cell:
    variant: str
    family: str
    split: str
    steps: int
    correct_share: float
    auroc: float | None
    low: float | None
    high: float | None


def auroc_ci(
    scores: list[float], labels: list[bool], boots: int = 1000, seed: int = 0
) -> tuple[float | None, float | None, float | None]:
    """AUROC and its bootstrap 95% interval (steps resampled with replacement)."""
    point = auroc(scores, labels)
    if point is None:
        return None, None, None
    rng = random.Random(seed)
    n, draws = len(scores), []
    for _ in range(boots):
        idx = [rng.randrange(n) for _ in range(n)]
        a = auroc([scores[i] for i in idx], [labels[i] for i in idx])
        if a is not None:
            draws.append(a)
    return point, percentile(draws, 0.025), percentile(draws, 0.975)


def _groups(rows: list[StepRow], split: str) -> dict[str, list[StepRow]]:
    picked = [r for r in rows if r.split == split]
    groups = {"all": picked}
    for fam in sorted({r.family for r in picked}):
        groups[fam] = [r for r in picked if r.family == fam]
    return groups


def cells(rows: list[StepRow], variants: list[str], split: str, boots: int = 1000) -> list[Cell]:
    """One cell per variant and family (and ``all``) of a split."""
    out = []
    for fam, group in _groups(rows, split).items():
        labels = [r.label for r in group]
        for v in variants:
            scored = [(r.values[v], r.label) for r in group if v in r.values]
            point, lo, hi = auroc_ci([s for s, _ in scored], [y for _, y in scored], boots)
            share = sum(labels) / len(labels) if labels else 0.0
            out.append(Cell(v, fam, split, len(group), share, point, lo, hi))
    return out


def choose_heads(rows: list[StepRow], top: int = 2) -> tuple[int, ...]:
    """The head indices whose single-head grounding has the best mean dev AUROC over the
    recorded layers."""
    dev = [r for r in rows if r.split == "dev"]
    by_head: dict[int, list[float]] = {}
    for name in [k for k in dev[0].values if k.startswith("head:")] if dev else []:
        a = auroc([r.values[name] for r in dev], [r.label for r in dev])
        if a is not None:
            by_head.setdefault(int(name.split(".")[1]), []).append(a)
    ranked = sorted(by_head, key=lambda h: -sum(by_head[h]) / len(by_head[h]))
    return tuple(sorted(ranked[:top]))


def _norm(xs: list[float], lo: float, hi: float) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    return [min(1.0, max(0.0, (x - lo) / span)) for x in xs]


@dataclass
class Fusion:
    variant: str
    beta: float  # chosen on dev
    dev_auroc: float | None
    test_auroc: float | None
    test_low: float | None
    test_high: float | None
    confidence_auroc: float | None  # conf_min alone on the same test steps
    gain: float | None  # test_auroc - confidence_auroc
    gain_low: float | None  # paired bootstrap 95% interval of the gain
    gain_high: float | None


def fuse(rows: list[StepRow], variant: str, boots: int = 1000, seed: int = 0) -> Fusion:
    """r = beta * l~ + (1 - beta) * g~ with bounds at the dev 5th/95th percentiles and beta
    chosen on dev; its test AUROC against confidence alone, with a paired bootstrap interval."""
    dev = [r for r in rows if r.split == "dev" and variant in r.values]
    test = [r for r in rows if r.split == "test" and variant in r.values]
    bounds = {}
    for name in ("conf_min", variant):
        xs = [r.values[name] for r in dev]
        bounds[name] = (percentile(xs, 0.05), percentile(xs, 0.95))

    def fused(group: list[StepRow], beta: float) -> list[float]:
        c = _norm([r.values["conf_min"] for r in group], *bounds["conf_min"])
        g = _norm([r.values[variant] for r in group], *bounds[variant])
        return [beta * a + (1 - beta) * b for a, b in zip(c, g, strict=True)]

    dev_labels = [r.label for r in dev]
    beta = max(BETAS, key=lambda b: auroc(fused(dev, b), dev_labels) or 0.0)
    labels = [r.label for r in test]
    scores, conf = fused(test, beta), [r.values["conf_min"] for r in test]
    point, lo, hi = auroc_ci(scores, labels, boots, seed)
    base = auroc(conf, labels)
    rng, gains = random.Random(seed), []
    for _ in range(boots):
        idx = [rng.randrange(len(test)) for _ in range(len(test))]
        ys = [labels[i] for i in idx]
        a, b = auroc([scores[i] for i in idx], ys), auroc([conf[i] for i in idx], ys)
        if a is not None and b is not None:
            gains.append(a - b)
    return Fusion(
        variant,
        beta,
        auroc(fused(dev, beta), dev_labels),
        point,
        lo,
        hi,
        base,
        None if point is None or base is None else point - base,
        percentile(gains, 0.025) if gains else None,
        percentile(gains, 0.975) if gains else None,
    )


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(cells_: list[Cell], fusions: list[Fusion], selections: list[Selection]) -> str:
    """The study's tables."""
    fams = list(dict.fromkeys(c.family for c in cells_))
    lines = []
    for split in ("dev", "test"):
        part = [c for c in cells_ if c.split == split]
        if not part:
            continue
        lines += [f"AUROC on the {split} split (95% bootstrap interval):", ""]
        lines.append("| variant | " + " | ".join(fams) + " |")
        lines.append("|---|" + "---|" * len(fams))
        for v in dict.fromkeys(c.variant for c in part):
            row = [next((c for c in part if c.variant == v and c.family == f), None) for f in fams]
            lines.append(
                f"| {v} | "
                + " | ".join(
                    f"{_f(c.auroc)} [{_f(c.low)}, {_f(c.high)}]" if c else "-" for c in row
                )
                + " |"
            )
        counts = [next(c for c in part if c.family == f) for f in fams]
        lines.append(
            "| steps (correct) | "
            + " | ".join(f"{c.steps} ({c.correct_share:.0%})" for c in counts)
            + " |"
        )
        lines.append("")
    lines += ["Fused with confidence (beta and bounds from dev; test AUROC):", ""]
    lines.append("| grounding variant | beta | fused test AUROC | confidence alone | gain [95%] |")
    lines.append("|---|---|---|---|---|")
    for f in fusions:
        lines.append(
            f"| {f.variant} | {f.beta:.1f} | {_f(f.test_auroc)} [{_f(f.test_low)}, "
            f"{_f(f.test_high)}] | {_f(f.confidence_auroc)} | {_f(f.gain)} "
            f"[{_f(f.gain_low)}, {_f(f.gain_high)}] |"
        )
    if selections:
        lines += ["", "Selection accuracy (share of contexts whose pick is a correct step):", ""]
        lines.append("| family | k | contexts | hidden medoid | attention medoid | random | best |")
        lines.append("|---|---|---|---|---|---|---|")
        for s in selections:
            lines.append(
                f"| {s.family} | {s.k} | {s.contexts} | {s.chosen_hidden:.2f} | "
                f"{s.chosen_attention:.2f} | {s.random:.2f} | {s.best:.2f} |"
            )
    return "\n".join(lines) + "\n"


def as_json(
    cells_: list[Cell], fusions: list[Fusion], selections: list[Selection]
) -> dict[str, Any]:
    return {
        "cells": [asdict(c) for c in cells_],
        "fusions": [asdict(f) for f in fusions],
        "selections": [asdict(s) for s in selections],
    }

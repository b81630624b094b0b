"""Draft-step signals against checker labels on the bundled pair (held-out split).

Runs SpecGuard with tau = 0 (every draft step kept, so every step is a draft step with its
scores), labels each step with the family's checker, and prints per family the AUROC of
confidence, grounding and the fused score for step correctness, plus signal percentiles.

    .venv/bin/python benchmarks/signal_stats.py [-n 40] [--k 1]
"""

from __future__ import annotations

import argparse
import statistics

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.assets import bundled_pair
from specguard_integrations.registry import load_lm
from specguard_integrations.tasks import FAMILIES, make_split
from specguard_integrations.tasks.runner import solve_specguard


def auroc(scores: list[float], labels: list[bool]) -> float:
    """P(score of a correct step > score of an incorrect one), ties count half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--k", type=int, default=1)
    args = ap.parse_args()
    d, t = bundled_pair()
    engine = SpecGuard(load_lm(str(d), device="cpu"), load_lm(str(t), device="cpu"))
    base = SpecGuardConfig.greedy() if args.k == 1 else SpecGuardConfig(k=args.k)
    cfg = base.merged(tau=0.0, max_step_tokens=48, max_new_tokens=160)
    allc, allg, ally = [], [], []
    print(
        "| family | steps | correct | AUROC conf | AUROC ground | conf p5/p50/p95"
        " | ground p5/p50/p95 |"
    )
    print("|---|---|---|---|---|---|---|")
    for fam in FAMILIES:
        c, g, y = [], [], []
        for item in make_split(fam, "test", args.n):
            s = solve_specguard(engine, item, cfg)
            for rec, v in zip(s.records, s.verdicts, strict=True):
                c.append(rec.confidence)
                g.append(rec.grounding if rec.grounding is not None else float("nan"))
                y.append(v.ok)
        allc += c
        allg += g
        ally += y
        print(
            f"| {fam} | {len(y)} | {sum(y) / len(y):.0%} | {auroc(c, y):.3f} | {auroc(g, y):.3f} | "
            f"{pct(c, 0.05):.2f}/{pct(c, 0.5):.2f}/{pct(c, 0.95):.2f} | "
            f"{pct(g, 0.05):.3f}/{pct(g, 0.5):.3f}/{pct(g, 0.95):.3f} |"
        )
    print(
        f"| all | {len(ally)} | {sum(ally) / len(ally):.0%} | {auroc(allc, ally):.3f} | "
        f"{auroc(allg, ally):.3f} | {pct(allc, 0.05):.2f}/{statistics.median(allc):.2f}/"
        f"{pct(allc, 0.95):.2f} | {pct(allg, 0.05):.3f}/{statistics.median(allg):.3f}/"
        f"{pct(allg, 0.95):.3f} |"
    )


if __name__ == "__main__":
    main()

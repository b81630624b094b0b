"""Where SpecGuard's time goes, and whether per-step cost stays flat as the prefix grows.

Runs on tiny random models built in memory (no download): a 2-layer draft and an 8-layer target.
Prints, for a short and a long prefix, the share of wall time per phase and the mean time per
step, for all-draft (tau=0), all-target (tau>1) and a mixed threshold. Not a test: numbers vary by
machine; compare rows measured in the same run.

    .venv/bin/python benchmarks/engine_phases.py [--steps 12] [--long 1500] [--k 16] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.testing import tiny_lm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--short", type=int, default=32)
    ap.add_argument("--long", type=int, default=1500)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--step-tokens", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1, help="runs per row, their steps pooled")
    args = ap.parse_args()
    torch.set_num_threads(2)
    draft = tiny_lm("llama", seed=1, layers=2, hidden=64, context=2048)
    target = tiny_lm("llama", seed=2, layers=8, hidden=256, heads=8, context=2048)
    base = SpecGuardConfig(
        k=args.k,
        max_step_tokens=args.step_tokens,
        max_steps=args.steps,
        max_new_tokens=args.steps * args.step_tokens,
        segmenter="blank_line",
    )
    phases = ("propose", "select", "score", "decide", "target", "commit")
    print(f"draft {draft.name}: 2 layers d=64; target {target.name}: 8 layers d=256; k={args.k}")
    print(
        "| prefix | mode | steps | ms/step (mean) | ms/step (median) | later steps (mean) | "
        + " | ".join(phases)
        + " |"
    )
    print("|---" * (6 + len(phases)) + "|")
    sg = SpecGuard(draft, target, base)
    sg.generate("warm up " * 4)
    for prefix in (args.short, args.long):
        prompt = ("abcdefghij " * (prefix // 11 + 1))[: prefix - 1]
        for mode, tau in (("all draft", 0.0), ("all target", 1.01), ("tau 0.5", 0.5)):
            runs = [sg.generate(prompt, config=base.merged(tau=tau)) for _ in range(args.repeat)]
            per_step = [s.times.total * 1e3 for r in runs for s in r.steps]
            # the first step of a run also pays for the prompt's prefill
            later = [s.times.total * 1e3 for r in runs for s in r.steps[1:]] or [float("nan")]
            share = [sum(getattr(r.phase_times(), p) for r in runs) for p in phases]
            share = [x / sum(share) for x in share]
            r = runs[0]
            print(
                f"| {r.draft_prompt_tokens} | {mode} | {len(per_step)} | "
                f"{statistics.mean(per_step):.1f} | {statistics.median(per_step):.1f} | "
                f"{statistics.mean(later):.1f} | " + " | ".join(f"{s:.0%}" for s in share) + " |"
            )


if __name__ == "__main__":
    main()

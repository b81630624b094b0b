"""AUROC, with bootstrap 95% intervals, of the target's score next to the draft's signals, on
the draft steps of one method of a `specguard bench` run (bench.json), by kind of step.

    .venv/bin/python benchmarks/judge_auroc.py BENCH_JSON METHOD

A method run with the target-verified judge records, for every draft step it judged, the
target's score `t` and the draft's confidence `l` and grounding `g`: all three on the same
steps. Word-problem steps are split into equation and answer lines. Prints a Markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from specguard_integrations.bench.signal_report import auroc_ci

SIGNALS = (
    ("target_score", "t (target, mean log-prob)"),
    ("confidence", "l (draft, min log-prob)"),
    ("grounding", "g (draft, rollout)"),
)


def kind(family: str, text: str) -> str:
    if family != "wordproblem":
        return family
    return "wordproblem:answer" if "Answer:" in text else "wordproblem:equation"


def main(path: str, method: str, boots: int = 1000) -> None:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = [
        (kind(r["family"], s["draft_text"]), label, s)
        for r in data["runs"]
        if r["method"] == method
        for s, label in zip(r["steps"], r["labels"], strict=True)
        if label is not None
    ]
    if not rows:
        raise SystemExit(f"no labelled steps of {method!r} in {path}")
    groups = {"all": rows}
    for k in sorted({x[0] for x in rows}):
        groups[k] = [x for x in rows if x[0] == k]
    head = [
        f"{g} ({len(v)} steps, {sum(x[1] for x in v) / len(v):.0%} correct)"
        for g, v in groups.items()
    ]
    print("| signal | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for field, name in SIGNALS:
        cells = []
        for v in groups.values():
            vals = [(x[2][field], x[1]) for x in v if x[2].get(field) is not None]
            a, lo, hi = auroc_ci([s for s, _ in vals], [y for _, y in vals], boots)
            cells.append("-" if a is None else f"{a:.3f} [{lo:.3f}, {hi:.3f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Benchmark output: a markdown table, a JSON file and PNG plots (the `[plots]` extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import BenchResult


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def markdown(result: BenchResult) -> str:
    """The method table, then the signal-quality table."""
    fams = sorted({f for m in result.methods for f in m.accuracy_by_family})
    head = (
        "| method | accuracy | " + " | ".join(fams) + " | total s | median s | p90 s | "
        "vs target | target-call rate | accepted draft | draft tok | target tok | peak MiB |"
    )
    lines = [head, "|" + "---|" * (len(fams) + 12)]
    for m in result.methods:
        lines.append(
            f"| {m.name} | {m.accuracy:.1%} | "
            + " | ".join(f"{m.accuracy_by_family.get(f, float('nan')):.0%}" for f in fams)
            + f" | {m.total_s:.2f} | {m.median_s:.3f} | {m.p90_s:.3f} | "
            f"{_f(m.speed_vs_target, '.2f')}x | {_f(m.target_call_rate, '.2f')} | "
            f"{_f(m.accepted_draft_rate, '.2f')} | {_f(m.draft_tokens, 'd')} | "
            f"{_f(m.target_tokens, 'd')} | {m.peak_memory_mib:.0f} |"
        )
    if result.signals:
        lines += [
            "",
            "| method | family | draft steps | correct | AUROC grounding | AUROC confidence "
            "| AUROC fused |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in result.signals:
            lines.append(
                f"| {s.method} | {s.family} | {s.steps} | {s.correct_share:.0%} | "
                f"{_f(s.auroc_grounding, '.3f')} | {_f(s.auroc_confidence, '.3f')} | "
                f"{_f(s.auroc_fused, '.3f')} |"
            )
    return "\n".join(lines) + "\n"


def write_report(result: BenchResult, out: str | Path) -> dict[str, Path]:
    """Write ``bench.md``, ``bench.json`` and (with matplotlib) the PNG plots into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "bench.md", "json": out / "bench.json"}
    paths["markdown"].write_text(markdown(result), encoding="utf-8")
    paths["json"].write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    try:
        import matplotlib
    except ImportError:
        return paths
    matplotlib.use("Agg")
    paths.update(_plots(result, out))
    return paths


def _plots(result: BenchResult, out: Path) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    paths = {}
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for m in result.methods:
        ax.scatter(m.median_s * 1000, 100 * m.accuracy, s=40)
        ax.annotate(
            m.name,
            (m.median_s * 1000, 100 * m.accuracy),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("median wall time per problem (ms)")
    ax.set_ylabel("final-answer accuracy (%)")
    ax.set_title("accuracy against latency, same prompts, one run")
    ax.grid(alpha=0.3)
    paths["accuracy_latency"] = _save(fig, out / "accuracy_latency.png")

    loops = [
        m.name for m in result.methods if any(r.steps for r in result.runs if r.method == m.name)
    ]
    if loops:
        fig, axes = plt.subplots(1, len(loops), figsize=(3.2 * len(loops), 3.2), squeeze=False)
        for ax, name in zip(axes[0], loops, strict=True):
            steps = [s for r in result.runs if r.method == name for s in r.steps]
            kept = [s.fused for s in steps if s.decision == "accept"]
            fell = [s.fused for s in steps if s.decision != "accept"]
            bins = [i / 20 for i in range(21)]
            ax.hist(kept, bins=bins, alpha=0.6, label=f"accepted ({len(kept)})", color="#2e8b57")
            ax.hist(fell, bins=bins, alpha=0.6, label=f"fallback ({len(fell)})", color="#b03a8a")
            if steps:
                ax.axvline(steps[0].threshold, color="black", ls="--", lw=1)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("fused score r (reward for rsd)")
            ax.legend(fontsize=7)
        paths["score_distributions"] = _save(fig, out / "score_distributions.png")
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

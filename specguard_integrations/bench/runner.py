"""One benchmark run: every method on the same items, interleaved so machine drift hits all
methods alike, and the metrics, each defined once here with its formula.

Per item, the methods run in an order rotated by the item's index; each method solves one
warm-up item first (not counted). Metrics per method:

- accuracy            = correct answers / items (also per family)
- wall time           per item: median, p90, total
- speed vs target     = total time of the method / total time of ``target`` (same run)
- target-call rate    = steps the target wrote / steps (1 for ``target``, 0 for ``draft``)
- accepted draft rate = draft steps kept / draft steps proposed  (= 1 - target-call rate)
- draft/target tokens = committed tokens each model wrote
- peak memory         = peak resident set size sampled while the method ran (CUDA: peak
                        allocated), in MiB

Signal quality: per family, the AUROC of each draft signal (grounding, confidence, fused score;
the reward for ``rsd``) for the checker's label of the draft step it judged:
``AUROC = P(score(correct step) > score(incorrect step))``, ties counted half.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from ..baselines.methods import Method
    from ..tasks.base import Item
    from ..types import StepRecord


@dataclass
class Run:
    method: str
    item: int
    family: str
    correct: bool
    seconds: float
    output_tokens: int
    steps: list[StepRecord] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)  # checker label of each record's draft step
    fallbacks: int = 0  # assisted generations that failed and ran without the assistant


@dataclass
class MethodSummary:
    name: str
    items: int
    accuracy: float
    accuracy_by_family: dict[str, float]
    total_s: float
    median_s: float
    p90_s: float
    speed_vs_target: float | None
    target_call_rate: float | None
    accepted_draft_rate: float | None
    draft_tokens: int | None
    target_tokens: int | None
    output_tokens: int
    peak_memory_mib: float


@dataclass
class SignalQuality:
    method: str
    family: str
    steps: int
    correct_share: float
    auroc_grounding: float | None
    auroc_confidence: float | None
    auroc_fused: float | None


@dataclass
class BenchResult:
    methods: list[MethodSummary]
    signals: list[SignalQuality]
    runs: list[Run]
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self, name: str) -> MethodSummary:
        for m in self.methods:
            if m.name == name:
                return m
        raise InvalidInputError(
            f"no method {name!r} in this bench (ran: {[m.name for m in self.methods]})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "methods": [asdict(m) for m in self.methods],
            "signals": [asdict(s) for s in self.signals],
            "runs": [
                {
                    "method": r.method,
                    "item": r.item,
                    "family": r.family,
                    "correct": r.correct,
                    "seconds": r.seconds,
                    "output_tokens": r.output_tokens,
                    "fallbacks": r.fallbacks,
                    "labels": r.labels,
                    "steps": [s.model_dump(mode="json") for s in r.steps],
                }
                for r in self.runs
            ],
        }


def auroc(scores: list[float], labels: list[bool]) -> float | None:
    """P(score of a positive > score of a negative), ties half; None without both classes."""
    pos = sorted(s for s, y in zip(scores, labels, strict=True) if y)
    neg = sorted(s for s, y in zip(scores, labels, strict=True) if not y)
    if not pos or not neg:
        return None
    # rank-sum form: O((P + N) log(P + N)) instead of comparing every pair
    import bisect

    wins = 0.0
    for p in pos:
        lo = bisect.bisect_left(neg, p)
        hi = bisect.bisect_right(neg, p)
        wins += lo + 0.5 * (hi - lo)
    return wins / (len(pos) * len(neg))


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1])."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else float("nan")


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def peak_memory(device: str = "cpu") -> Iterator[list[float]]:
    """Yields a one-item list filled with the peak memory (MiB) seen inside the block."""
    out = [0.0]
    if device.startswith("cuda"):  # every device the models may use (a device map splits them)
        import torch

        devices = range(torch.cuda.device_count())
        for d in devices:
            torch.cuda.reset_peak_memory_stats(d)
        yield out
        out[0] = sum(torch.cuda.max_memory_allocated(d) for d in devices) / 2**20
        return
    stop = threading.Event()
    peak = [_rss_mib()]

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], _rss_mib())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out[0] = max(peak[0], _rss_mib())


def _labels(item: Item, steps: list[StepRecord]) -> list[bool]:
    if not item.has_step_labels:
        return []
    return [item.check_step(i, s.draft_text).ok for i, s in enumerate(steps)]


def run_bench(
    items: list[Item],
    methods: list[Method],
    *,
    progress: Callable[[str], None] | None = None,
    device: str = "cpu",
    warmup: bool = True,
) -> BenchResult:
    """Run every method on every item, interleaved; return summaries, signal AUROCs and runs."""
    if not items or not methods:
        raise InvalidInputError("run_bench needs items and methods")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"method names repeat: {names}")
    if warmup:
        for m in methods:
            m.solve(items[0])
    runs: list[Run] = []
    peaks = dict.fromkeys(names, 0.0)
    t_start = time.perf_counter()
    for i, item in enumerate(items):
        order = methods[i % len(methods) :] + methods[: i % len(methods)]
        for m in order:
            with peak_memory(device) as peak:
                solved = m.solve(item)
            peaks[m.name] = max(peaks[m.name], peak[0])
            runs.append(
                Run(
                    method=m.name,
                    item=i,
                    family=item.family,
                    correct=solved.correct,
                    seconds=solved.seconds,
                    output_tokens=solved.output_tokens,
                    steps=list(solved.records),
                    labels=_labels(item, solved.records),
                    fallbacks=solved.fallbacks,
                )
            )
            if progress is not None:
                progress(m.name)
    summaries = [
        _summarise(name, [r for r in runs if r.method == name], peaks[name]) for name in names
    ]
    if "target" in names:
        base = next(s for s in summaries if s.name == "target").total_s
        for s in summaries:
            s.speed_vs_target = s.total_s / base if base > 0 else None
    return BenchResult(
        summaries,
        signal_quality(runs),
        runs,
        {"items": len(items), "methods": names, "wall_s": time.perf_counter() - t_start},
    )


def _summarise(name: str, runs: list[Run], peak: float) -> MethodSummary:
    secs = [r.seconds for r in runs]
    fams = sorted({r.family for r in runs})
    steps = [s for r in runs for s in r.steps]
    if steps:
        target_steps = sum(s.source == "target" for s in steps)
        rate: float | None = target_steps / len(steps)
        accepted: float | None = 1.0 - target_steps / len(steps)
        d_tok: int | None = sum(s.num_tokens for s in steps if s.source == "draft")
        t_tok: int | None = sum(s.num_tokens for s in steps if s.source == "target")
    else:  # a plain method: all text from one model (assisted: the target's output)
        out = sum(r.output_tokens for r in runs)
        rate = {"target": 1.0, "draft": 0.0}.get(name)
        accepted = None
        d_tok = out if name == "draft" else (0 if name == "target" else None)
        t_tok = out if name in ("target", "assisted") else (0 if name == "draft" else None)
    return MethodSummary(
        name=name,
        items=len(runs),
        accuracy=sum(r.correct for r in runs) / len(runs),
        accuracy_by_family={
            f: statistics.mean(r.correct for r in runs if r.family == f) for f in fams
        },
        total_s=sum(secs),
        median_s=statistics.median(secs),
        p90_s=percentile(secs, 0.9),
        speed_vs_target=None,
        target_call_rate=rate,
        accepted_draft_rate=accepted,
        draft_tokens=d_tok,
        target_tokens=t_tok,
        output_tokens=sum(r.output_tokens for r in runs),
        peak_memory_mib=peak,
    )


def signal_quality(runs: list[Run]) -> list[SignalQuality]:
    """AUROC of each signal for draft-step correctness, per method and family (and ``all``)."""
    out = []
    for method in dict.fromkeys(r.method for r in runs):
        labelled = [
            (r.family, s, y)
            for r in runs
            if r.method == method and r.labels
            for s, y in zip(r.steps, r.labels, strict=True)
        ]
        if not labelled:
            continue
        for fam in [*sorted({f for f, _, _ in labelled}), "all"]:
            rows = [(s, y) for f, s, y in labelled if fam in ("all", f)]
            ys = [y for _, y in rows]
            g = [(s.grounding, y) for s, y in rows if s.grounding is not None]
            out.append(
                SignalQuality(
                    method=method,
                    family=fam,
                    steps=len(rows),
                    correct_share=sum(ys) / len(ys),
                    auroc_grounding=auroc([x for x, _ in g], [y for _, y in g]) if g else None,
                    auroc_confidence=auroc([s.confidence for s, _ in rows], ys),
                    auroc_fused=auroc([s.fused for s, _ in rows], ys),
                )
            )
    return out

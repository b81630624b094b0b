"""`SpecGuard.generate_batch` of N prompts against N serial `generate` calls, in one run, on the
bundled pair (held-out items of every family but tools, their own bundled config).

Prints requests/s, generated tokens/s and per-request latency p50/p99 for both, the ratio, and
whether every text is the same. Not a test: numbers vary by machine; compare rows of one run.
Where `generate_batch` does not exist (an older checkout), the batch runs in N threads.

    .venv/bin/python benchmarks/batch_generate.py [-n 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from specguard_integrations.registry import load_pair
from specguard_integrations.tasks import FAMILIES, make_split


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    engine = load_pair(None, None, None, device="cpu")
    fams = [f for f in FAMILIES if f != "tools"]
    items = [it for f in fams for it in make_split(f, "test", args.n)]
    prompts = [it.prompt for it in items[:: max(1, len(items) // args.n)]][: args.n]
    engine.generate(prompts[0])  # warm up
    rows = {"serial generate": [], "generate_batch": []}
    texts = {}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        serial = [engine.generate(p) for p in prompts]
        rows["serial generate"].append((time.perf_counter() - t0, serial))
        t0 = time.perf_counter()
        if hasattr(engine, "generate_batch"):
            batch = engine.generate_batch(prompts)
        else:
            with ThreadPoolExecutor(len(prompts)) as pool:
                batch = list(pool.map(engine.generate, prompts))
        rows["generate_batch"].append((time.perf_counter() - t0, batch))
        texts = {"serial": [r.text for r in serial], "batch": [r.text for r in batch]}
    print(f"{args.n} prompts x {args.rounds} rounds, bundled pair, bundled config, CPU")
    print("| mode | req/s | tokens/s | p50 s | p99 s |")
    print("|---|---|---|---|---|")
    rps = {}
    for mode, runs in rows.items():
        wall = sum(w for w, _ in runs)
        results = [r for _, rs in runs for r in rs]
        lat = [r.wall_time for r in results]
        tokens = sum(r.output_tokens for r in results)
        rps[mode] = len(results) / wall
        print(
            f"| {mode} | {rps[mode]:.2f} | {tokens / wall:.0f} | {statistics.median(lat):.3f} |"
            f" {pct(lat, 0.99):.3f} |"
        )
    print(f"\ngenerate_batch / serial: {rps['generate_batch'] / rps['serial generate']:.2f}x")
    same = sum(a == b for a, b in zip(texts["serial"], texts["batch"], strict=True))
    print(f"same text: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()

"""Start-up of the real GGUF pair (SmolLM2-135M drafting for Gemma-3-270M), each start in a new
process: with an empty conversion cache (transformers parses and dequantises both files), then
again (the converted safetensors copy is read), and with the copy switched off. Each start
loads the pair and answers one short chat call; the wall time from process start to the answer
is printed per start.

    .venv/bin/python benchmarks/gguf_start.py            # fetches the GGUF files if needed
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = float(sys.argv[1])
from specguard_integrations import SpecGuardConfig
from specguard_integrations.registry import load_pair
draft_dir, draft_file, target_dir, target_file, cache = sys.argv[2:7]
keep = cache == "on"
engine = load_pair(
    draft_dir, target_dir, SpecGuardConfig.greedy(max_new_tokens=16, tau=0.5),
    device="cpu",
    draft_kwargs={"gguf_file": draft_file, "gguf_cache": keep},
    target_kwargs={"gguf_file": target_file, "gguf_cache": keep},
)
loaded = time.time() - t0
result = engine.generate("Question: what is 2 + 3?\n")
print(json.dumps({"loaded_s": round(loaded, 2), "answered_s": round(time.time() - t0, 2)}))
"""


def start(args: list[str], env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(time.time()), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from fetch_assets import gemma3_gguf, smollm2_gguf

    (dd, df), (td, tf) = smollm2_gguf(), gemma3_gguf()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "SPECGUARD_CACHE": cache, "OMP_NUM_THREADS": "2"}
        pair = [str(dd), df, str(td), tf]
        rows = [
            ("first start (empty cache: converts)", start([*pair, "on"], env)),
            ("second start (reads the copy)", start([*pair, "on"], env)),
            ("third start (reads the copy)", start([*pair, "on"], env)),
            ("copy switched off (gguf_cache=False)", start([*pair, "off"], env)),
        ]
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
    print("| start | loaded s | first answer s |")
    print("|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['loaded_s']:.1f} | {r['answered_s']:.1f} |")
    print(f"\nconverted copies on disk: {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()

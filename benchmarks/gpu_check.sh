#!/usr/bin/env bash
# One short check of what only a GPU shows, to run when a GPU is lent (under 8 minutes on one
# H100/H200; docs/benchmark.md, "GPU check", records the figures with the card named). Every
# part writes to $OUT (default runs/gpu_check); a part that fails is reported and the next runs.
#
#   bash benchmarks/gpu_check.sh            # after scripts/bootstrap.sh (a CUDA build of torch)
#   DEVICE=cpu bash benchmarks/gpu_check.sh # the same commands on the CPU (a dry run)
#
# 1. the tests that take a device, on cuda: bf16 capture, grouping in bf16, the prefix cache
# 2. the bundled pair on cuda in bf16: bench --limit 10 for target, assisted and config
# 3. the GGUF pair on cuda in bf16: bench on the words suite, target and config
# 4. serve_load at 1 and 16 clients, grouping on and off
# 5. the signal study on 20 items
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
status=0
part() {  # part NAME SECONDS CMD...: one timed part, its log kept
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  local t0=$SECONDS
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - t0)) s"
  else
    echo "   FAILED (exit $?) after $((SECONDS - t0)) s; tail of $OUT/$name.log:"
    tail -n 15 "$OUT/$name.log"
    status=1
  fi
}
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

part tests 120 "$PY" -m pytest -q -p no:cacheprovider --device "$DEVICE" \
  tests/unit/test_device_hazards.py tests/unit/test_prefix_cache.py
part bench_bundled 120 .venv/bin/specguard bench --limit 10 --methods target,assisted,config \
  --device "$DEVICE" --dtype bfloat16 --out "$OUT/bench_bundled"
GGUF=$("$PY" - <<'PY'
import json, sys
sys.path.insert(0, "tests")
from fetch_assets import gemma3_gguf, smollm2_gguf
(dd, df), (td, tf) = smollm2_gguf(), gemma3_gguf()
print(json.dumps([str(dd), df, str(td), tf]))
PY
)
read -r DD DF TD TF < <("$PY" -c "import json,sys; print(*json.loads(sys.argv[1]))" "$GGUF")
part bench_gguf 150 .venv/bin/specguard bench --suite words --limit 10 --methods target,config \
  --draft "$DD" --draft-kwargs "{\"gguf_file\": \"$DF\"}" \
  --target "$TD" --target-kwargs "{\"gguf_file\": \"$TF\"}" \
  --device "$DEVICE" --dtype bfloat16 --out "$OUT/bench_gguf"
part serve_grouped 90 "$PY" benchmarks/serve_load.py --spawn specguard --device "$DEVICE" \
  --concurrency 1 16 --duration 15 --json "$OUT/serve_grouped.json"
part serve_plain 90 "$PY" benchmarks/serve_load.py --spawn specguard --device "$DEVICE" \
  --serve-arg=--no-grouping --concurrency 1 16 --duration 15 --json "$OUT/serve_plain.json"
part signals 90 .venv/bin/specguard signals --limit 5 --device "$DEVICE" --out "$OUT/signals"
echo "== done: logs and results in $OUT"
exit "$status"

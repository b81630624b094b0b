#!/usr/bin/env bash
# Every check, fastest first, stopping at the first tier that fails: lint and types, the unit
# tier, then the integration and fault tiers side by side with the model-family tiers. The
# family tiers' real tokenizers, GGUF models and llama.cpp server are fetched (or found in the
# shared cache, tests/fetch_assets.py) in the background while the first checks run; the
# integration and fault tiers need none of them and start as soon as the unit tier passes.
# Each pytest process uses one torch thread, so the two share the machine's cores without
# oversubscribing them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
logs=$(mktemp -d)
"$PY" tests/fetch_assets.py >"$logs/assets" 2>&1 &
assets=$!
pids=("$assets")
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

echo "== lint and types"
.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
echo "== unit tier"
"$PY" -m pytest -q -p no:cacheprovider tests/unit

tier() {  # tier NAME PATH...: one pytest process, its output kept for the summary
  local name=$1
  shift
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" -m pytest -q -p no:cacheprovider "$@" \
    >"$logs/$name" 2>&1
}
echo "== integration and fault tiers (started), test assets (fetching)"
tier integration tests/integration tests/faults &
integration=$!
pids+=("$integration")
status=0
if wait "$assets"; then
  echo "== family tiers (started)"
  tier families tests/families &
  families=$!
  pids+=("$families")
  wait "$families" || status=1
else
  cat "$logs/assets" >&2
  echo "fetching the test assets failed" >&2
  status=1
fi
wait "$integration" || status=1
trap - EXIT
for name in integration families; do
  [ -f "$logs/$name" ] || continue
  echo "== $name: output"
  cat "$logs/$name"
done
exit "$status"

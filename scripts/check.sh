#!/usr/bin/env bash
# Every check, fastest first: lint and types, then the unit tier, stopping at the first that
# fails; then the integration, fault and docs tiers (one process) side by side with the
# model-family tiers, each started as soon as what it needs is there. The family tiers' real
# tokenizers and GGUF models (quick) and the llama.cpp server (a source build, minutes) are
# fetched, or found in the shared cache (tests/fetch_assets.py), in the background from the
# start; the integration, fault and docs tiers need none of them. Each pytest process uses one
# torch thread, so they share the machine's cores without oversubscribing them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
logs=$(mktemp -d)
"$PY" tests/fetch_assets.py models >"$logs/models" 2>&1 &
models=$!
"$PY" tests/fetch_assets.py server >"$logs/server" 2>&1 &
server=$!
pids=("$models" "$server")
stop() {  # stop PID...: each process and everything it started (a build's compilers)
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

tier() {  # tier NAME PYTEST-ARGS...: one pytest process in the background, its output kept
  local name=$1
  shift
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" -m pytest -q -p no:cacheprovider "$@" \
    >"$logs/$name" 2>&1 &
  pids+=("$!")
  tiers+=("$name:$!")
  echo "== $name tier (started)"
}
tiers=()
status=0
fetched() {  # fetched NAME PID: whether the asset fetch succeeded (its log shown if not)
  if wait "$2"; then
    return 0
  fi
  cat "$logs/$1" >&2
  echo "fetching the test assets ($1) failed" >&2
  status=1
  return 1
}
tier integration tests/integration tests/faults tests/docs
if fetched models "$models"; then
  tier families tests/families --ignore tests/families/test_llamacpp_engine.py
fi
if fetched server "$server"; then
  tier llama.cpp tests/families/test_llamacpp_engine.py
fi
for entry in "${tiers[@]}"; do
  wait "${entry#*:}" || status=1
done
trap - EXIT
for entry in "${tiers[@]}"; do
  echo "== ${entry%%:*}: output"
  cat "$logs/${entry%%:*}"
done
exit "$status"

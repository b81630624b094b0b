#!/usr/bin/env bash
# Every check, fastest first, stopping at the first that fails: lint and types, the unit tier,
# then the integration, fault and model-family tiers. The family tiers' real tokenizers, GGUF
# models and llama.cpp server are fetched (or found in the shared cache, tests/fetch_assets.py)
# in the background while the first checks run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
assets_log=$(mktemp)
"$PY" tests/fetch_assets.py >"$assets_log" 2>&1 &
assets=$!
trap 'kill "$assets" 2>/dev/null || true' EXIT

echo "== lint and types"
.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
echo "== unit tier"
"$PY" -m pytest -q -p no:cacheprovider tests/unit
echo "== test assets"
if ! wait "$assets"; then
  cat "$assets_log" >&2
  echo "fetching the test assets failed" >&2
  exit 1
fi
trap - EXIT
echo "== integration, fault and family tiers"
"$PY" -m pytest -q -p no:cacheprovider tests/integration tests/faults tests/families

#!/usr/bin/env bash
# Run the runtime benchmarks by hand (`make bench`); results land in bench/results/*.json.
# Each benchmark measures its baseline in the same run: compare ratios, not absolute numbers.
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
export LITELLM_LOCAL_MODEL_COST_MAP=true
for b in http_cached lm_overhead cache_zipf weight_propagation analysis_cost chaos_runtime; do
  echo "==> bench/$b.py"
  "$PY" "$b.py"
done

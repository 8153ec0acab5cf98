#!/usr/bin/env bash
# Workloads file reload benchmark (real redis-server): see bench_reload.py.
# Usage: benchmarks/declared/run.sh [--entries N] [--changes C]
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$TFGW_ROOT"
export PYTHONPATH="$TFGW_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$TFGW_VENV/bin/python" benchmarks/declared/bench_reload.py "$@"

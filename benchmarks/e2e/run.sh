#!/usr/bin/env bash
# End-to-end benchmarks (whole gateway in network namespaces, both data planes side by side).
# Usage: benchmarks/e2e/run.sh [--rounds R] [--latency-n N] [--bulk-names M] [--only tfgw|upstream]
source "$(dirname "$0")/../../scripts/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
cd "$TFGW_ROOT"
export PYTHONPATH="$TFGW_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$TFGW_VENV/bin/python" benchmarks/e2e/bench_e2e.py "$@"

#!/usr/bin/env bash
# Agent benchmarks: CPU per result PUT of the explorer client, httpx (before) vs aiohttp (now).
# Usage: benchmarks/agent/run.sh [--puts N] [--rounds R] [--concurrency C]
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$TFGW_ROOT"
"$TFGW_VENV/bin/pip" install -q -r benchmarks/agent/requirements.txt
exec "$TFGW_VENV/bin/python" benchmarks/agent/bench_explorer_client.py "$@"

#!/usr/bin/env bash
# Router benchmark on loopback: iperf3 throughput and connect-to-first-byte latency, direct
# path vs tfrouter's direct proxy vs tfrouter's reverse tunnel (tftunnel client), side by side.
# Usage: benchmarks/router/run.sh [--rounds R] [--seconds S] [--latency-n N]
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$TFGW_ROOT"
command -v iperf3 >/dev/null || die "iperf3 missing: apt-get install iperf3"
export PYTHONPATH="$TFGW_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$TFGW_VENV/bin/python" benchmarks/router/bench_router.py "$@"

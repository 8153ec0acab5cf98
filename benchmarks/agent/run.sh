#!/usr/bin/env bash
# Agent benchmarks.
#   benchmarks/agent/run.sh [client] [--puts N] [--rounds R] [--concurrency C]
#       CPU per result PUT of the explorer client, httpx (before) vs aiohttp (now) vs the result sender's lean client
#   benchmarks/agent/run.sh scale [--sizes 5000,50000] [--rounds R] [--poll-interval S] [--profile DIR] [--baseline REV [--baseline-explorer | --baseline-explorer-only]]
#       N workloads created at once → live in redis and acknowledged (root: network namespaces)
#   benchmarks/agent/run.sh cpu [--baseline REV] [--rounds R] [--workloads N]
#       CPU per workload in the agent's own process (job work, primitives on redis), REV vs this
#   benchmarks/agent/run.sh all     client and scale, with their defaults
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$TFGW_ROOT"
"$TFGW_VENV/bin/pip" install -q -r benchmarks/agent/requirements.txt
export PYTHONPATH="$TFGW_ROOT${PYTHONPATH:+:$PYTHONPATH}"
what=client
case "${1:-}" in client|scale|cpu|all) what=$1; shift ;; esac
scale() {
  [ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
  "$TFGW_VENV/bin/python" benchmarks/agent/bench_scale.py "$@"
}
case $what in
  client) exec "$TFGW_VENV/bin/python" benchmarks/agent/bench_explorer_client.py "$@" ;;
  scale) scale "$@" ;;
  cpu) exec "$TFGW_VENV/bin/python" benchmarks/agent/bench_workload_cpu.py "$@" ;;
  all) "$TFGW_VENV/bin/python" benchmarks/agent/bench_explorer_client.py && scale ;;
esac

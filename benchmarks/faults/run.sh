#!/usr/bin/env bash
# Fault and abuse numbers (not a test of its own): runs the tests/faults suite, which measures
# while it checks, and prints only the measured lines (router/CoreDNS RSS before, during and after
# abuse, restore times after redis data loss, kill -9 coverage, hostile-corpus throughput).
# Loopback and private network namespaces only; needs root (namespaces), the Go binaries and redis.
# Usage: benchmarks/faults/run.sh [extra pytest args]
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$TFGW_ROOT"
step "running tests/faults (about 2-3 minutes)"
out=$("$TFGW_VENV/bin/python" -m pytest tests/faults -q -s -p no:cacheprovider "$@" 2>&1) || {
    printf '%s\n' "$out" | tail -40
    die "tests/faults failed; numbers above are incomplete"
}
step "numbers"
printf '%s\n' "$out" | grep -E '^(slowloris|flood|50 tunnels|DNS flood|FLUSHALL|redis restarted|kill -9|[0-9]+ hostile)' \
    || die "no numbers found in the output"

#!/usr/bin/env bash
# DNS benchmark (not a test): CoreDNS+gatewaydns vs CoreDNS+file (QPS, dnsperf),
# change-to-visible latency (gatewaydns with/without cache, file plugin with reload), the
# cost of bulk writes into one zone (reload pacing off vs on) and one 50,000-name zone under
# 200 changes/s. Loopback only.
# Usage: benchmarks/dns/run.sh [--baseline REV] [bench.py options]; see README.md.
source "$(dirname "$0")/../../scripts/lib.sh"
command -v dnsperf >/dev/null || die "dnsperf is required (apt-get install dnsperf)"
command -v redis-server >/dev/null || die "redis-server is required"
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--baseline" ]; then
    # The plugin of another revision of this repository, built into $TFGW_BIN, measured side
    # by side in the scale section.
    rev=$2; shift 2
    step "building coredns-tfgw of $rev as the baseline"
    src=$(mktemp -d)
    git -C "$TFGW_ROOT" archive "$rev" dataplane/coredns | tar -x -C "$src"
    ( cd "$src/dataplane/coredns" && CGO_ENABLED=0 go build -trimpath -o "$TFGW_BIN/coredns-tfgw-baseline" . )
    rm -rf "$src"
    args+=(--baseline "$TFGW_BIN/coredns-tfgw-baseline")
  else
    args+=("$1"); shift
  fi
done
step "building coredns-tfgw"
( cd "$TFGW_ROOT/dataplane/coredns" && CGO_ENABLED=0 go build -trimpath -o "$TFGW_BIN/coredns-tfgw" . )
step "running the benchmark"
exec "$TFGW_VENV/bin/python" "$(dirname "$0")/bench.py" --bin "$TFGW_BIN" "${args[@]}"

#!/usr/bin/env bash
# DNS benchmark (not a test): CoreDNS+gatewaydns vs CoreDNS+file (QPS, dnsperf),
# change-to-visible latency (gatewaydns with/without cache, file plugin with reload) and the
# cost of bulk writes into one zone (reload pacing off vs on).
# Loopback only. Usage: benchmarks/dns/run.sh [bench.py options]; see README.md.
source "$(dirname "$0")/../../scripts/lib.sh"
command -v dnsperf >/dev/null || die "dnsperf is required (apt-get install dnsperf)"
command -v redis-server >/dev/null || die "redis-server is required"
step "building coredns-tfgw"
( cd "$TFGW_ROOT/dataplane/coredns" && CGO_ENABLED=0 go build -trimpath -o "$TFGW_BIN/coredns-tfgw" . )
step "running the benchmark"
exec "$TFGW_VENV/bin/python" "$(dirname "$0")/bench.py" --bin "$TFGW_BIN" "$@"

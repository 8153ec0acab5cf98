#!/usr/bin/env bash
# Router benchmarks on loopback, each printing its figures side by side:
#   throughput: iperf3 throughput and connect-to-first-byte latency, direct path vs tfrouter's
#               direct proxy vs tfrouter's reverse tunnel (tftunnel client)  [bench_router.py]
#   feed:       tfrouter's CPU time and redis reads while 2,500 proxy services are written,
#               the previous one-GET-per-event feed vs the current build     [bench_feed.py]
#   tunnel:     bulk GB transfers both ways: direct path, direct route, tunnel (tftunnel) and
#               the tunnel of a before build, CPU s per process and per GB [bench_tunnel.py]
#   tls:        full TLS handshakes/s and bulk throughput, terminated names side by side with
#               passthrough, with the router's CPU per operation             [bench_tls.py]
#   proxy:      direct routes on ports 80/443 against the direct path: `proxy throughput`
#               (bulk HTTP by Host and TLS by SNI both ways, iperf3 both ways, first byte,
#               CPU per process, strace -c of the router), `proxy fair` (others' latency while
#               one source floods), `proxy conns` (thousands of connections held) [bench_proxy.py]
# Usage: benchmarks/router/run.sh [throughput|feed|tunnel|tls|proxy] [options of that benchmark]
#        benchmarks/router/run.sh [--rounds R] [--seconds S] [--latency-n N]   (both; options
#        go to the throughput benchmark, the feed one runs with its defaults)
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$TFGW_ROOT"
export PYTHONPATH="$TFGW_ROOT${PYTHONPATH:+:$PYTHONPATH}"
py="$TFGW_VENV/bin/python"
throughput() {
  command -v iperf3 >/dev/null || die "iperf3 missing: apt-get install iperf3"
  "$py" benchmarks/router/bench_router.py "$@"
}
feed() {
  command -v go >/dev/null || die "go missing: the feed benchmark builds the 'before' tfrouter"
  "$py" benchmarks/router/bench_feed.py "$@"
}
tunnel() {
  command -v iperf3 >/dev/null || die "iperf3 missing: apt-get install iperf3"
  command -v go >/dev/null || die "go missing: the tunnel benchmark builds the 'before' binaries"
  "$py" benchmarks/router/bench_tunnel.py "$@"
}
tls() {
  command -v go >/dev/null || die "go missing: the TLS benchmark builds its load generator"
  "$py" benchmarks/router/bench_tls.py "$@"
}
proxy() {
  command -v go >/dev/null || die "go missing: the proxy benchmark builds its load generator"
  command -v iperf3 >/dev/null || die "iperf3 missing: apt-get install iperf3"
  command -v strace >/dev/null || die "strace missing: apt-get install strace"
  command -v haproxy >/dev/null || die "haproxy missing (the splicing reference): apt-get install haproxy"
  "$py" benchmarks/router/bench_proxy.py "${@:-throughput}"
}
case ${1:-} in
  throughput) shift; throughput "$@" ;;
  feed) shift; feed "$@" ;;
  tls) shift; tls "$@" ;;
  tunnel) shift; tunnel "$@" ;;
  proxy) shift; proxy "$@" ;;
  *) throughput "$@"; feed; tunnel; tls; proxy ;;
esac

#!/usr/bin/env bash
# The local run: set the machine up, then run the whole gateway (redis, CoreDNS with the gateway
# plugin, the router, the development explorer with sample workloads, the agent, and a NATed
# user running the trc-compatible tftunnel) in network namespaces, print what is served and dig/curl
# commands that work as printed, and stop cleanly on Ctrl-C, leaving nothing behind.
#
# Usage: scripts/demo.sh [--standalone] [--check] [--skip-setup] [--workdir DIR] [--timeout SECONDS]
#   --standalone  no explorer: the agent serves a workloads file (docs/workloads.md) written in
#                 the work directory; edit it while it runs (--check also makes a live change)
#   --check       start, verify every printed command, stop (what the test suite runs)
#   --skip-setup  do not run scripts/setup.sh --no-kernel first (it is idempotent but slow-ish)
# See docs/local-run.md.
source "$(dirname "$0")/lib.sh"
setup=1
args=()
for arg in "$@"; do
  case $arg in
    --skip-setup) setup=0 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (the local run uses network namespaces)"
if [ "$setup" = 1 ]; then
  step "setting the machine up (scripts/setup.sh --no-kernel)"
  "$TFGW_ROOT/scripts/setup.sh" --no-kernel
fi
step "the gateway in network namespaces"
cd "$TFGW_ROOT"
export PYTHONPATH="$TFGW_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# exec: Ctrl-C and SIGTERM go straight to the driver, which stops everything it started.
exec "$TFGW_VENV/bin/python" -m tests.support.demo "${args[@]}"

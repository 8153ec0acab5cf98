# Common settings for the project's scripts. Source it; do not run it.
# shellcheck shell=bash
set -euo pipefail

TFGW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Downloads and builds that survive between runs on the same machine (never required).
TFGW_CACHE=${TFGW_CACHE:-/var/cache/tfgateway}
TFGW_BIN=${TFGW_BIN:-$TFGW_CACHE/bin}
TFGW_VENV=${TFGW_VENV:-$TFGW_ROOT/.venv}
export TFGW_ROOT TFGW_CACHE TFGW_BIN TFGW_VENV
export GOFLAGS=${GOFLAGS:--mod=readonly}
export GOTOOLCHAIN=local
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$TFGW_CACHE/pip}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

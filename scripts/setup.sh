#!/usr/bin/env bash
# Install everything the gateway, its local run and its tests need on a Debian machine (root).
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--no-kernel]
source "$(dirname "$0")/lib.sh"
kernel=1
for arg in "$@"; do
  case $arg in
    --no-kernel) kernel=0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages and uses network namespaces)"
mkdir -p "$TFGW_CACHE" "$TFGW_BIN"

step "Debian packages"
mapfile -t pkgs < <(grep -v '^\s*#' "$TFGW_ROOT/scripts/apt-packages.txt" | grep -v '^\s*$')
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The distribution's redis service is not ours: tests and the local run start their own.
systemctl disable --now redis-server >/dev/null 2>&1 || true

step "Go toolchain"
command -v go >/dev/null || die "Go >= 1.25 is required (CoreDNS v1.14 needs it); install it from go.dev"
go version

step "Python virtualenv ($TFGW_VENV)"
python3 -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
[ -x "$TFGW_VENV/bin/python" ] || python3 -m venv "$TFGW_VENV"
"$TFGW_VENV/bin/pip" install -q --upgrade pip
"$TFGW_VENV/bin/pip" install -q -r "$TFGW_ROOT/agent/requirements-dev.txt"
"$TFGW_VENV/bin/pip" install -q --no-deps -e "$TFGW_ROOT/agent"
# Apart, and after the agent: an older agent install owned the `tfgateway-devexplorer` script,
# and upgrading both in one pip run removed the script the new distribution had just written.
"$TFGW_VENV/bin/pip" install -q --no-deps --force-reinstall -e "$TFGW_ROOT/devexplorer"

step "Nix >= 2.18 for the Nix checks (Debian 13's nix-bin, unpacked into $TFGW_CACHE/nix)"
"$TFGW_ROOT/scripts/nix.sh" install

step "Go programs (CoreDNS with the gateway plugin, the router, trc/trs) into $TFGW_BIN"
"$TFGW_ROOT/scripts/build-go.sh"

if [ "$kernel" = 1 ]; then
  step "Debian kernel for the WireGuard tests (QEMU guest)"
  "$TFGW_ROOT/scripts/kernel.sh" fetch
fi
step "setup done"

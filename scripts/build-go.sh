#!/usr/bin/env bash
# Build every Go program of the data plane, and the test tools (tests/tools: Pebble), into
# $TFGW_BIN from the pinned Go modules. Each module lists its programs in a file `binaries`:
# "<name> <package>".
# Go's own build cache makes a rebuild of unchanged code take seconds.
source "$(dirname "$0")/lib.sh"
mkdir -p "$TFGW_BIN"
export CGO_ENABLED=0
for list in "$TFGW_ROOT"/dataplane/*/binaries "$TFGW_ROOT"/tests/tools/binaries; do
  [ -e "$list" ] || continue
  mod=$(dirname "$list")
  ( cd "$mod"
    echo "module $(basename "$mod"): go mod download"
    go mod download
    while read -r name pkg; do
      case $name in ''|'#'*) continue ;; esac
      echo "  building $name ($pkg)"
      go build -trimpath -o "$TFGW_BIN/$name" "$pkg"
    done < "$list" )
done
ls -1 "$TFGW_BIN"

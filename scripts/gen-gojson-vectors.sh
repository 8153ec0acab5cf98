#!/usr/bin/env bash
# Regenerate the Go encoding/json test vectors (tests/vectors/gojson/go<version>.json) from real
# Go toolchains running tests/vectors/gojson/gen.go:
#   - the machine's Go (go1.26.* today), what tests/unit/model/test_gojson_vectors.py re-runs;
#   - Go 1.21.13, fetched by the go command from the Go module proxy (golang.org/toolchain);
#   - Go 1.15.15, Debian bullseye's golang-1.15-go and -src packages, downloaded with apt-get into a
#     private directory (nothing is installed). The oldest Go this project can get: the Go
#     daemon's release binaries were built with Go 1.14, which neither source serves.
# Usage: scripts/gen-gojson-vectors.sh [--without-go1.15]
# (--without-go1.15 keeps the committed go1.15.15.json, for when bullseye has left Debian's
# mirrors; the tests check that it and go1.21.13.json agree.)
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT/tests/vectors/gojson"

with_go115=1
case "${1:-}" in
  --without-go1.15) with_go115=0 ;;
  "") ;;
  *) die "usage: $0 [--without-go1.15]" ;;
esac

# gen.go has no dependencies; -mod=mod keeps GOFLAGS from a caller from getting in the way.
generate() { # <file> <env...>: run gen.go under the given environment into <file>
  local file=$1 tmp
  shift
  tmp=$(mktemp)
  env "$@" GOFLAGS=-mod=mod go run . >"$tmp" || { rm -f "$tmp"; die "gen.go failed ($*)"; }
  mv "$tmp" "$file"
  chmod 644 "$file"
  echo "wrote tests/vectors/gojson/$file"
}

step "Go encoding/json vectors with the machine's Go ($(go env GOVERSION))"
generate "$(go env GOVERSION).json" GOTOOLCHAIN=local

step "with Go 1.21.13 (golang.org/toolchain from the Go module proxy)"
generate go1.21.13.json GOTOOLCHAIN=go1.21.13

if [ "$with_go115" = 1 ]; then
  step "with Go 1.15.15 (Debian bullseye golang-1.15-go, unpacked under $TFGW_CACHE/go1.15)"
  root=$TFGW_CACHE/go1.15
  goroot=$root/unpacked/usr/lib/go-1.15
  if [ ! -x "$goroot/bin/go" ]; then
    mkdir -p "$root/apt/lists/partial" "$root/apt/archives/partial" "$root/unpacked"
    echo "deb http://deb.debian.org/debian bullseye main" >"$root/apt/sources.list"
    apt_opts=(
      -o "Dir::Etc::sourcelist=$root/apt/sources.list" -o Dir::Etc::sourceparts=/nonexistent
      -o "Dir::State::Lists=$root/apt/lists" -o "Dir::Cache=$root/apt"
      -o "Dir::Cache::archives=$root/apt/archives" -o APT::Sandbox::User=root
    )
    apt-get "${apt_opts[@]}" update >/dev/null ||
      die "cannot read Debian bullseye's package list (gone from the mirror? use --without-go1.15)"
    (cd "$root/apt/archives" && apt-get "${apt_opts[@]}" download golang-1.15-go golang-1.15-src) ||
      die "cannot download golang-1.15-go from bullseye (use --without-go1.15)"
    for deb in "$root"/apt/archives/golang-1.15-*.deb; do dpkg-deb -x "$deb" "$root/unpacked"; done
  fi
  # GOENV=off: a go.env of a newer Go may carry flags Go 1.15 does not know.
  generate go1.15.15.json GOENV=off GOTOOLCHAIN=local GOROOT="$goroot" \
    PATH="$goroot/bin:$PATH" GOPATH="$root/gopath" GOCACHE="$root/gocache"
fi

#!/usr/bin/env bash
# Evaluate the NixOS module with nixpkgs' lib but without nixpkgs (tests/nixos/offline-eval.nix):
# every assertion case, and a printout of what the module renders. Needs a checkout of nixpkgs'
# lib directory (e.g. github.com/nix-community/nixpkgs.lib, which carries only lib/), given as
# NIXPKGS_LIB=/path/to/lib. Not part of scripts/test.sh: no package registry ships that lib.
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT"
[ -n "${NIXPKGS_LIB:-}" ] && [ -f "$NIXPKGS_LIB/default.nix" ] \
  || die "set NIXPKGS_LIB to a nixpkgs lib/ directory (one with default.nix)"
nix-instantiate --eval --strict --json \
  -E "import ./tests/nixos/offline-eval.nix { lib = import $NIXPKGS_LIB; }" 2> >(grep -v nixbld >&2) \
  | python3 -m json.tool

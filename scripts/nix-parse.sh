#!/usr/bin/env bash
# Parse every .nix file (syntax only: there is no nixpkgs here to evaluate against).
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT"
command -v nix-instantiate >/dev/null || die "nix-instantiate missing (Debian package nix-bin)"
rc=0; n=0
while IFS= read -r -d '' f; do
  n=$((n + 1))
  nix-instantiate --parse "$f" >/dev/null || { echo "parse error: $f"; rc=1; }
done < <(git ls-files -z '*.nix')
echo "parsed $n nix files"
[ "$n" -gt 0 ] || die "no .nix files found"
exit $rc

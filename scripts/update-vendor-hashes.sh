#!/usr/bin/env bash
# Recompute the hashes the Nix packages of the Go data plane depend on, and write them to
# nix/vendor-hashes.json (or, with --check, only compare and fail on any difference).
#
#   <package>   vendorHash of buildGoModule: the NAR hash (sha256, SRI) of the `vendor/` directory
#               that `go mod vendor` writes in the module, which is exactly what nixpkgs'
#               goModules fixed-output derivation copies to $out.
#
# --check also builds each package's subPackages from that vendor tree without the module proxy,
# as buildGoModule does, so a moved main package or an inconsistent vendor tree fails here.
# --head: hash the modules as committed (HEAD) instead of the work tree.
# Runs offline apart from the Go module proxy; needs Go of the same minor version as nixpkgs' Go
# (modules.txt can differ between minors) and `nix hash path` (scripts/nix.sh).
# Rerun it whenever go.mod/go.sum of a wrapper module or nixpkgs' Go changes.
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT"

mode=update
from_head=
for arg in "$@"; do
  case $arg in
    --check) mode=check ;;
    --head) from_head=1 ;;
    *) die "usage: $0 [--check] [--head]" ;;
  esac
done

HASHES=nix/vendor-hashes.json
# Nix package name -> wrapper Go module (the same modules scripts/build-go.sh builds for tests).
declare -A MODULES=(
  [coredns]=dataplane/coredns
  [router]=dataplane/router
  [trc]=dataplane/tftunnel
)

command -v go >/dev/null || die "go missing"
nar_hash() { "$TFGW_ROOT/scripts/nix.sh" --extra-experimental-features nix-command hash path --type sha256 "$1"; }

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# The vendor directory nixpkgs' buildGoModule would produce for module $1, in $2.
vendor_dir() {
  local mod=$1 copy=$2
  mkdir -p "$copy"
  if [ -n "$from_head" ]; then
    git archive HEAD "$mod" | tar -x -C "$copy" --strip-components="$(tr -cd / <<<"$mod/" | wc -c)"
    rm -rf "$copy/vendor"
  else
    (cd "$mod" && tar -c --exclude=./vendor .) | tar -x -C "$copy"
  fi
  (cd "$copy" && GOFLAGS= GOWORK=off GO111MODULE=on GOTOOLCHAIN=local go mod vendor) \
    || die "go mod vendor failed in $mod"
  [ -n "$(ls -A "$copy/vendor")" ] || die "$mod has no dependencies: its package needs vendorHash = null"
}

# The Go nixpkgs builds each package with (buildGo1xxModule, nixpkgs' GOTOOLCHAIN=local) must
# accept the module's `go` line, the hashes must come from the same Go minor (modules.txt
# differs between minors), and the package's src must leave out any local vendor/.
go_minor() { sed -nE 's/^go 1\.([0-9]+)(\.[0-9]+)?$/\1/p' "$1"; }
local_minor=$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')
for name in "${!MODULES[@]}"; do
  pkg=nix/packages/$name.nix
  builder=$(sed -nE 's/^buildGo1([0-9]+)Module \{$/\1/p' "$pkg")
  [ -n "$builder" ] || die "$pkg: not built with a versioned buildGo1xxModule (the Go would follow nixpkgs' default)"
  want=$(go_minor "${MODULES[$name]}/go.mod")
  [ -n "$want" ] || die "${MODULES[$name]}/go.mod has no go line"
  [ "$want" -le "$builder" ] || die "${MODULES[$name]}/go.mod needs Go 1.$want but $pkg builds with buildGo1${builder}Module"
  [ "$local_minor" = "$builder" ] || die "the hashes must be computed with Go 1.$builder (nixpkgs' buildGo1${builder}Module); this Go is $(go env GOVERSION)"
  grep -q 'src = (import ./go-source.nix { inherit lib; }).src' "$pkg" || die "$pkg: src must come from go-source.nix (no vendor/ in it)"
done

declare -A GOT=()
for name in "${!MODULES[@]}"; do
  mod=${MODULES[$name]}
  if { [ -n "$from_head" ] && ! git cat-file -e "HEAD:$mod/go.mod" 2>/dev/null; } \
    || { [ -z "$from_head" ] && [ ! -f "$mod/go.mod" ]; }; then
    die "$mod/go.mod does not exist, but nix/packages builds package $name from it"
  fi
  if [ "$mode" = update ] && [ -z "$from_head" ] && [ -n "$(git status --porcelain -- "$mod")" ]; then
    echo "warning: $mod has uncommitted changes; commit them with this hash (or use --head)" >&2
  fi
  vendor_dir "$mod" "$work/$name"
  GOT[$name]=$(nar_hash "$work/$name/vendor")
  echo "$name: ${GOT[$name]}" >&2
  if [ "$mode" = check ]; then
    # Build the package's subPackages the way buildGoModule does: from vendor/ only, no proxy.
    subs=$(sed -n 's/^ *subPackages = \[ \(.*\) \];$/\1/p' "nix/packages/$name.nix" | tr -d '"')
    [ -n "$subs" ] || die "nix/packages/$name.nix: no one-line subPackages = [ ... ];"
    for sub in $subs; do
      (cd "$work/$name" && GOFLAGS="-mod=vendor -trimpath" GOPROXY=off GOWORK=off GOTOOLCHAIN=local \
        go build -o /dev/null "./$sub") || die "$name: ./$sub does not build from the vendor tree"
    done
    echo "$name: ./${subs// / ./} build from vendor/" >&2
  fi
done

pairs=()
for k in "${!GOT[@]}"; do pairs+=("$k=${GOT[$k]}"); done
python3 - "$mode" "$HASHES" "${pairs[@]}" <<'PY'
import json, sys
from pathlib import Path

mode, path, *pairs = sys.argv[1:]
got = dict(p.split("=", 1) for p in pairs)
file = Path(path)
if mode == "update":
    file.write_text(json.dumps(dict(sorted(got.items())), indent=2) + "\n")
    print(f"wrote {path}")
    sys.exit(0)
try:
    committed = json.loads(file.read_text())
except (OSError, ValueError) as e:
    sys.exit(f"cannot read {path}: {e}")
bad = []
for k in sorted(set(got) | set(committed)):
    if k not in got:
        bad.append(f"{k}: in {path} but its Go module does not exist")
    elif committed.get(k) != got[k]:
        bad.append(f"{k}: committed {committed.get(k)!r}, computed {got[k]!r}")
if bad:
    print("\n".join(bad) + "\nrun scripts/update-vendor-hashes.sh and commit the result", file=sys.stderr)
    sys.exit(1)
print(f"{path}: all {len(got)} hashes match")
PY

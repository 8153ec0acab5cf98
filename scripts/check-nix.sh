#!/usr/bin/env bash
# Offline checks of the Nix half of the project (there is no nixpkgs here to evaluate against):
#   1. every .nix file parses (nix-instantiate --parse of Nix 2.26, scripts/nix.sh: the
#      evaluator nixpkgs 26.05 accepts, from Debian 13's packages);
#   2. deadnix (a Nix linter from crates.io) finds no dead code;
#   3. flake.lock is a real lock of the flake's only input, nixpkgs;
#   4. no placeholder hashes anywhere in the Nix code, the lock or the hash file;
#   5. the committed vendorHashes still match the wrapper Go modules
#      (scripts/update-vendor-hashes.sh --check);
#   6. the images' own settings name no production endpoint (an image must act on nothing);
#   7. with NIXPKGS_LIB set (a checkout of nixpkgs' lib/, which no package registry ships):
#      scripts/eval-nix-offline.sh (typed evaluation, kept renderings, deliberate typos).
#      Without it that step is reported as NOT CHECKED, never as passed.
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT"
DEADNIX_VERSION=1.3.1
CARGO_ROOT=$TFGW_CACHE/cargo
rc=0
fail() { echo "FAIL: $*" >&2; rc=1; }

"$TFGW_ROOT/scripts/nix.sh" install
NIX_BIN=$("$TFGW_ROOT/scripts/nix.sh" bin)
echo "evaluator: $("$NIX_BIN/nix" --version)"
mapfile -d '' files < <(git ls-files -z --cached --others --exclude-standard -- '*.nix')
[ ${#files[@]} -gt 0 ] || die "no .nix files found"

step "parse ${#files[@]} nix files"
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  if ! err=$("$NIX_BIN/nix-instantiate" --parse "$f" 2>&1 >/dev/null); then
    fail "$f does not parse: $(grep -v nixbld <<<"$err")"
  fi
done

step "deadnix $DEADNIX_VERSION"
if [ ! -x "$CARGO_ROOT/bin/deadnix" ] || ! "$CARGO_ROOT/bin/deadnix" --version | grep -q " $DEADNIX_VERSION"; then
  PATH=$PATH:$HOME/.cargo/bin
  command -v cargo >/dev/null || die "cargo missing: needed to install deadnix from crates.io"
  cargo install --quiet --locked --root "$CARGO_ROOT" deadnix --version "$DEADNIX_VERSION" \
    || die "cargo install deadnix failed"
fi
# -L: module and callPackage argument sets name what they accept, used or not (nixpkgs style).
"$CARGO_ROOT/bin/deadnix" --fail -L "${files[@]}" || fail "deadnix found dead code"

step "flake.lock and placeholder hashes"
python3 - <<'PY' || rc=1
import json
import re
import subprocess
import sys
from pathlib import Path

errors = []
flake = Path("flake.nix").read_text()
urls = re.findall(r'url\s*=\s*"([^"]+)"', flake)
if urls != ["github:NixOS/nixpkgs/nixos-26.05"]:
    errors.append(f"flake.nix: expected the single input github:NixOS/nixpkgs/nixos-26.05, got {urls}")
try:
    lock = json.loads(Path("flake.lock").read_text())
except (OSError, ValueError) as e:
    sys.exit(f"FAIL: flake.lock unreadable: {e}")
if lock.get("version") != 7:
    errors.append(f"flake.lock: version {lock.get('version')!r}, want 7")
nodes = lock.get("nodes", {})
root = nodes.get(lock.get("root", ""), {})
if lock.get("root") != "root" or root.get("inputs") != {"nixpkgs": "nixpkgs"}:
    errors.append("flake.lock: root node must be 'root' with inputs {nixpkgs: nixpkgs} only")
if set(nodes) != {"root", "nixpkgs"}:
    errors.append(f"flake.lock: unexpected nodes {sorted(set(nodes) - {'root', 'nixpkgs'})}")
locked = nodes.get("nixpkgs", {}).get("locked", {})
original = nodes.get("nixpkgs", {}).get("original", {})
checks = {
    "type": lambda v: v == "github",
    "owner": lambda v: v == "NixOS",
    "repo": lambda v: v == "nixpkgs",
    "rev": lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{40}", v),
    "narHash": lambda v: isinstance(v, str) and re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", v),
    "lastModified": lambda v: isinstance(v, int) and v > 1_700_000_000,
}
for key, ok in checks.items():
    if not ok(locked.get(key)):
        errors.append(f"flake.lock: nixpkgs.locked.{key} = {locked.get(key)!r} is not valid")
if original != {"owner": "NixOS", "repo": "nixpkgs", "ref": "nixos-26.05", "type": "github"}:
    errors.append(f"flake.lock: nixpkgs.original {original} does not match flake.nix")

hashes = json.loads(Path("nix/vendor-hashes.json").read_text())
for name, value in hashes.items():
    if not re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", value):
        errors.append(f"nix/vendor-hashes.json: {name} = {value!r} is not an SRI sha256")

# Placeholders people leave behind while waiting for Nix to print the real hash.
fake = re.compile(
    r"lib\.fake(Hash|Sha256|Sha512)|\bfakeHash\b|sha256-A{20,}|sha256-0{20,}|\b0{52}\b"
    r"|(hash|sha256|vendorHash)\s*=\s*\"\""
)
tracked = subprocess.run(
    ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.nix", "*.lock", "nix/*.json"],
    capture_output=True, text=True, check=True,
).stdout.split()
for path in tracked:
    p = Path(path)
    if not p.is_file():
        continue
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if fake.search(line):
            errors.append(f"{path}:{n}: placeholder hash: {line.strip()}")
for e in errors:
    print("FAIL:", e, file=sys.stderr)
print(f"flake.lock ok: nixpkgs {locked.get('rev')}" if not errors else "", end="")
sys.exit(1 if errors else 0)
PY
echo

step "vendorHash of the Go wrapper modules"
scripts/update-vendor-hashes.sh --check || fail "vendor hashes are stale"

step "the images name no production endpoint"
if grep -nE 'https?://[^"]*grid\.tf|explorer\.(grid|testnet)' images/*.nix; then
  fail "an image's own settings point at a production service; images act on nothing until configured"
fi

step "typed offline evaluation (scripts/eval-nix-offline.sh)"
if [ -n "${NIXPKGS_LIB:-}" ]; then
  scripts/eval-nix-offline.sh || fail "offline evaluation"
else
  echo "NOT CHECKED here: the typed evaluation of the module (option paths and types, assertion"
  echo "cases, kept renderings in tests/nixos/rendered/, deliberate typos) needs nixpkgs' lib/,"
  echo "which no package registry ships. Run it with NIXPKGS_LIB=/path/to/lib (docs/nixos.md)."
fi

[ $rc -eq 0 ] && echo "nix checks passed" || echo "nix checks FAILED"
exit $rc

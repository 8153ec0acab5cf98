#!/usr/bin/env bash
# Evaluate the NixOS module with nixpkgs' lib but without nixpkgs (tests/nixos/offline-eval.nix,
# every NixOS option it sets declared with nixpkgs 26.05's type in tests/nixos/nixos-options.nix):
#   1. every assertion case of tests/nixos/assertion-cases.nix, and the reference and example
#      configurations without a failed assertion;
#   2. the kept renderings in tests/nixos/rendered/ equal what the module renders
#      (--update rewrites them instead: review the diff and commit it);
#   3. an image (images/common.nix) enables nothing of the gateway;
#   4. deliberate mistakes fail: a misspelt option path and a wrong type, each in a copy of the
#      module, must stop the evaluation with nixpkgs' own message;
#   5. the VM test's Python has no undefined names (ruff).
# Needs nixpkgs' lib/ directory, e.g. from github.com/nix-community/nixpkgs.lib (only lib/,
# a few MB; commit ef8da250 of 2026-05-25 is master right after the 26.05 branch-off), given as
# NIXPKGS_LIB=/path/to/lib. No package registry ships it, so CI cannot run this: scripts/test.sh
# says so; docs/nixos.md says how to run it.
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT"
mode=check
for arg in "$@"; do
  case $arg in
    --update) mode=update ;;
    *) die "usage: NIXPKGS_LIB=/path/to/nixpkgs/lib $0 [--update]" ;;
  esac
done
[ -n "${NIXPKGS_LIB:-}" ] && [ -f "$NIXPKGS_LIB/default.nix" ] \
  || die "set NIXPKGS_LIB to a nixpkgs lib/ directory (one with default.nix); see docs/nixos.md"
NIX_BIN=$("$TFGW_ROOT/scripts/nix.sh" bin)
[ -x "$NIX_BIN/nix-instantiate" ] || "$TFGW_ROOT/scripts/nix.sh" install
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
evaluate() { "$NIX_BIN/nix-instantiate" --eval --strict --json -E "$1" 2> >(grep -v nixbld >&2); }
lib="import $NIXPKGS_LIB"

step "evaluate services.tfgateway (assertion cases, reference, example, image)"
evaluate "import ./tests/nixos/offline-eval.nix { lib = $lib; }" >"$out/eval.json"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
d = json.loads((out / "eval.json").read_text())
(out / "rendered.json").write_text(json.dumps(d["rendered"]))
boot = d["firstBoot"]
problems = [f"{k} = {boot[k]!r}" for k in ("units", "allowedTCPPorts", "allowedUDPPorts", "redis") if boot[k]]
if boot["tfgateway"] or problems:
    sys.exit(f"images/common.nix must boot serving nothing: tfgateway={boot['tfgateway']} {problems}")
print(f"{d['assertionCases']} contradictory configurations rejected; the image enables nothing")
# The VM test's script must be valid Python with no undefined names (the NixOS test driver
# lints it too); the driver's globals are declared first.
prelude = "from typing import Any\n" + "".join(
    f"{n}: Any = None\n" for n in ("explorer", "gateway", "backend", "client", "router", "natted", "standalone")
) + "def start_all() -> None: ...\ndef subtest(name: str) -> Any: ...\n"
(out / "testscript.py").write_text(prelude + d["vmTestScript"])
PY

step "kept renderings (tests/nixos/rendered/, $mode)"
python3 tests/nixos/render.py "$mode" "$out/rendered.json" tests/nixos/rendered

step "deliberate mistakes must fail the evaluation"
# name | file | sed expression (applied to a copy of nixos-modules/) | nixpkgs' message
cases=(
  "misspelt option path|router.nix|s/serviceConfig = /serviceConfg = /|The option \`systemd.services.tfgateway-router.serviceConfg' does not exist"
  "misspelt NixOS option|network.nix|s/allowedTCPPorts = \\[/allowedTcpPorts = [/|The option \`networking.firewall.allowedTcpPorts' does not exist"
  "wrong type|redis.nix|s/appendOnly = true;/appendOnly = \"yes\";/|is not of type \`boolean'"
  "wrong element type|network.nix|s/allowedUDPPorts = \\[ cfg.dns.port \\]/allowedUDPPorts = [ (toString cfg.dns.port) ]/|is not of type \`16 bit unsigned integer"
)
failed=0
cp -r nix "$out/"  # the module's copies import ../nix/packages
for case in "${cases[@]}"; do
  IFS='|' read -r name file expr message <<<"$case"
  copy=$out/modules-$RANDOM
  cp -r nixos-modules "$copy"
  sed -i "$expr" "$copy/$file"
  if cmp -s "nixos-modules/$file" "$copy/$file"; then
    echo "FAIL: $name: the mistake was not applied to $file (sed '$expr' matched nothing)"; failed=1; continue
  fi
  if err=$("$NIX_BIN/nix-instantiate" --eval --strict --json \
    -E "import ./tests/nixos/offline-eval.nix { lib = $lib; module = $copy; }" 2>&1 >/dev/null); then
    echo "FAIL: $name in $file evaluated without an error"; failed=1
  elif ! grep -qF -- "$message" <<<"$err"; then
    echo "FAIL: $name in $file failed, but not with \"$message\":"; grep -v nixbld <<<"$err" | tail -5; failed=1
  else
    echo "ok: $name ($file) -> $message"
  fi
done
[ $failed = 0 ] || die "a deliberate mistake was not caught"

step "a local vendor/ never reaches a Go package's src"
mod=$out/gomodule
mkdir -p "$mod/vendor/example.org/x" "$mod/cmd"
touch "$mod/go.mod" "$mod/cmd/main.go" "$mod/vendor/modules.txt" "$mod/vendor/example.org/x/x.go"
files=$(evaluate "map toString (($lib).fileset.toList ((import ./nix/packages/go-source.nix { lib = $lib; }).files $mod))")
python3 - "$files" <<'PY'
import json, sys
files = json.loads(sys.argv[1])
assert files and not any("/vendor" in f for f in files), files
print(f"src has {len(files)} files, none under vendor/")
PY

step "the VM test's script"
"$TFGW_VENV/bin/ruff" check --no-cache --isolated --select F,E9 "$out/testscript.py"
echo "offline evaluation passed"

#!/usr/bin/env bash
# Evaluate the NixOS module with nixpkgs' lib but without nixpkgs (tests/nixos/offline-eval.nix):
# every assertion case, and a printout of what the module renders. Needs a checkout of nixpkgs'
# lib directory (e.g. github.com/nix-community/nixpkgs.lib, which carries only lib/), given as
# NIXPKGS_LIB=/path/to/lib. Not part of scripts/test.sh: no package registry ships that lib.
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT"
[ -n "${NIXPKGS_LIB:-}" ] && [ -f "$NIXPKGS_LIB/default.nix" ] \
  || die "set NIXPKGS_LIB to a nixpkgs lib/ directory (one with default.nix)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
nix-instantiate --eval --strict --json \
  -E "import ./tests/nixos/offline-eval.nix { lib = import $NIXPKGS_LIB; }" 2> >(grep -v nixbld >&2) \
  >"$out/eval.json"
python3 -m json.tool "$out/eval.json"
# The VM test's script must be valid Python with no undefined names (the NixOS test driver
# lints it too); the driver's globals are declared first.
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
script = json.loads((out / "eval.json").read_text())["vmTestScript"]
prelude = "from typing import Any\n" + "".join(
    f"{n}: Any = None\n" for n in ("explorer", "gateway", "backend", "client", "router", "natted")
) + "def start_all() -> None: ...\ndef subtest(name: str) -> Any: ...\n"
(out / "testscript.py").write_text(prelude + script)
PY
"$TFGW_VENV/bin/ruff" check --no-cache --isolated --select F,E9 "$out/testscript.py"
echo "offline evaluation passed"

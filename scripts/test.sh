#!/usr/bin/env bash
# Run every test suite of the project: lint, Go tests (race detector), Python unit and
# integration tests (real redis, CoreDNS, router, trc in network namespaces), the kernel
# WireGuard tests in a QEMU guest, and a parse of every Nix file. Installs what is missing
# first (scripts/setup.sh). A missing prerequisite is an error, never a skip.
source "$(dirname "$0")/lib.sh"
"$TFGW_ROOT/scripts/setup.sh"
cd "$TFGW_ROOT"
failed=()
run() { local name=$1; shift; step "$name"; if "$@"; then echo "ok: $name"; else echo "FAILED: $name"; failed+=("$name"); fi; }

run "lint (ruff, mypy --strict, gofmt, go vet)" scripts/lint.sh
for mod in dataplane/*/; do
  [ -f "$mod/go.mod" ] || continue
  run "go test -race ($mod)" bash -c "cd '$mod' && go test -race -count=1 -timeout 10m ./..."
done
run "pytest (unit + integration)" "$TFGW_VENV/bin/pytest" tests --ignore=tests/kernel -p no:cacheprovider
run "kernel WireGuard tests (QEMU guest)" scripts/kernel.sh test
run "nix checks (parse with Nix 2.26, deadnix, flake.lock, vendor hashes, images)" scripts/check-nix.sh

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nFAILED suites: %s\n' "${failed[*]}"
  exit 1
fi
printf '\nall suites passed\n'

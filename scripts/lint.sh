#!/usr/bin/env bash
# Static checks: ruff and mypy --strict on the agent, the dev explorer and tests; the agent's
# import layers (import-linter); gofmt and go vet on Go modules (the Go vector generator too).
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT"
rc=0
"$TFGW_VENV/bin/ruff" check agent devexplorer tests benchmarks || rc=1
"$TFGW_VENV/bin/ruff" format --check agent devexplorer tests benchmarks || rc=1
"$TFGW_VENV/bin/mypy" --strict agent/src devexplorer/src tests || rc=1
"$TFGW_VENV/bin/lint-imports" --no-cache || rc=1  # the agent's layers (pyproject.toml)
for mod in dataplane/*/ tests/vectors/gojson/; do
  [ -f "$mod/go.mod" ] || continue
  unformatted=$(gofmt -l "$mod")
  if [ -n "$unformatted" ]; then echo "gofmt: $unformatted"; rc=1; fi
  (cd "$mod" && go vet ./...) || rc=1
done
exit $rc

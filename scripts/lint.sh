#!/usr/bin/env bash
# Static checks: ruff and mypy --strict on the agent and tests; gofmt and go vet on Go modules.
source "$(dirname "$0")/lib.sh"
cd "$TFGW_ROOT"
rc=0
"$TFGW_VENV/bin/ruff" check agent tests benchmarks || rc=1
"$TFGW_VENV/bin/ruff" format --check agent tests benchmarks || rc=1
"$TFGW_VENV/bin/mypy" --strict agent/src tests || rc=1
for mod in dataplane/*/; do
  [ -f "$mod/go.mod" ] || continue
  unformatted=$(gofmt -l "$mod")
  if [ -n "$unformatted" ]; then echo "gofmt: $unformatted"; rc=1; fi
  (cd "$mod" && go vet ./...) || rc=1
done
exit $rc

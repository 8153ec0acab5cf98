"""Workloads declared by the operator in a TOML file (`--workloads`, docs/workloads.md):
parsed and checked (`file`), applied live by difference (`source`), persisted (`records`) and
shown to the operator (`results`)."""

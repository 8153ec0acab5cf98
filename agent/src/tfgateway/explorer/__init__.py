"""The TFExplorer, v2 protocol: the HTTP client (`client`), request signatures (`signatures`),
payload models (`models`) and the workload codec from explorer items to reservations and back
(`workloads`). Knows HTTP; nothing of redis or of the primitives.
"""

"""The provisioning engine: poll, apply each workload once through the primitives, answer every
one. `engine` runs the jobs; `cache` keeps what is live; `outbox` delivers results, deletes and
stats durably; `counters` sums what is reserved. Knows reservations, not redis key names of
the data plane.
"""

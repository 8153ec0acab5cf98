"""Redis mechanics, knowing no key of the gateway: `--redis` URLs (`url`), the auto-pipeline
that sends one turn's commands together (`batch`), and optimistic check-and-set transactions
(`transaction`). Imports nothing else of the agent.
"""

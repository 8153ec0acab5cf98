"""What the agent tells its operator: log format (`logs`) and Prometheus metrics (`metrics`).

Imports nothing else of the agent.
"""

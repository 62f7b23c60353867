"""Released task suites (installed as agentopd.tasks)."""

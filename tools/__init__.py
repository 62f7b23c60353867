"""Sandboxed tools (installed as agentopd.tools)."""

"""agentopd: on-policy distillation for multi-turn tool-using LLM agents.

Importing the package registers its environments with gymnasium (``agentopd/<Name>-v0``).
"""

from agentopd import envs as _envs  # noqa: F401  (registers the env families)

__version__ = "0.1.0"

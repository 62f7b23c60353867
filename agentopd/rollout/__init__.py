"""Rollout: playing episodes. The renderer (chat template, token-in / token-out), one runner for
any policy (token or message), the oracle as a message policy, the task-sampler hook that
curricula implement, and the env pool that steps a batch of envs in parallel. Imports `core` and
`inference`; it needs nothing from `agentopd.envs` beyond the gymnasium `Env` contract.
"""

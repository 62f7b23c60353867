"""Rollout: playing episodes. The renderer (chat template, token-in / token-out), one runner for
any policy (token or message), the oracle as a message policy, the task-sampler hook that
curricula implement, and the env pools that own a batch's envs and step them in parallel
(threads here, or Ray actors). Imports `core` and `inference`; it needs nothing from
`agentopd.envs` beyond the gymnasium `Env` contract.
"""

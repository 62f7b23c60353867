"""Training: rows -> micro-batches (`batching`), pure loss functions (`losses`), an `Objective`
per method that declares the teacher signal it needs and computes its loss from a batch
(`objectives`), the learner (optimizer, micro-batching, packing through the shared
`inference.forward.logits_at`, checkpoints) and per-turn statistics of the learner's own
forward (`turn_stats`). Imports `core` and `inference` only: never envs, rollouts or teachers.
"""

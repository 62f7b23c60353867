"""Metrics: episode and per-turn metrics (`episodes`: success, on-track after turn t, first
divergence, per-turn teacher KL, tool errors), the sinks a run writes to (`sinks`: JSONL,
TensorBoard, wandb) and the report (`report`: PNG plots and a summary). Imports `core` only.
"""

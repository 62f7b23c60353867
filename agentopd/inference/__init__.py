"""Inference: sampling parameters, the two policy kinds, model loading and the shared forward.

A `TokenPolicy` (token-id prefixes in, sampled ids + exact logprobs out; `HFPolicy` here, vLLM
and served backends next to it) and a `MessagePolicy` (messages in, text out) are what the
rollout plays episodes with. `models` parses specs (``hf:``, ``vllm:``, ``openai:``) and loads
transformers models; `embedded` provides the offline default student; `forward.logits_at` is
the one logits-at-positions forward the learner and local teachers share. Imports only `core`.
"""

"""Teachers relabel the student's own episodes. Each declares what it gives (`Signal`): a logit
teacher (a local ``hf:`` model, or ``self``: the student with the task's skill card) gives full
logits and so also top-k and sampled-token log-probs; the env's oracle gives text (the expert's
turn for each state the student reached) and demonstrations. `factory` maps a spec to its
declared signals without loading anything, so a mismatch with the objective is a config error
before the first model loads. `check` refuses missing or degenerate signals. Imports `core` and
`inference`.
"""

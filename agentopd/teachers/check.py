"""Never train on a missing or degenerate teacher signal."""

from __future__ import annotations

import math
from collections.abc import Sequence

from agentopd.core.rows import TrainRow


class TeacherSignalError(RuntimeError):
    """The teacher's signal is missing, non-finite or degenerate."""


def check_signal(rows: Sequence[TrainRow]) -> dict[str, float]:
    """Fail loudly on a missing, non-finite or degenerate teacher signal; return its stats."""
    vals = [lp for r in rows if r.teacher_logp is not None
            for lp, m in zip(r.teacher_logp, r.loss_mask) if m]
    n_targets = sum(r.n_targets for r in rows)
    if n_targets == 0:
        raise TeacherSignalError("no student tokens to distill on this step (all episodes empty?)")
    if len(vals) != n_targets:
        raise TeacherSignalError(f"teacher scored {len(vals)} of {n_targets} student tokens")
    if not all(math.isfinite(v) for v in vals):
        raise TeacherSignalError("teacher logprobs contain NaN or inf")
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / len(vals)
    if var < 1e-10:
        raise TeacherSignalError(
            f"teacher logprobs are constant ({mean:.4f}) on every token: a uniform or broken teacher")
    probs = [math.exp(v) for v in vals]
    return {
        "teacher/logp_mean": mean,
        "teacher/logp_std": math.sqrt(var),
        "teacher/p_sampled_lt_0.01": sum(p < 0.01 for p in probs) / len(probs),
        "teacher/p_sampled_gt_0.99": sum(p > 0.99 for p in probs) / len(probs),
    }


def identical_signal(rows: Sequence[TrainRow]) -> bool:
    """The teacher gives exactly the sampler's logprob on every target (a zero distillation signal)."""
    return all(abs(o - t) < 1e-6 for r in rows if r.teacher_logp is not None
               for o, t, m in zip(r.old_logp, r.teacher_logp, r.loss_mask) if m)

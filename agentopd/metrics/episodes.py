"""Episode-level and per-turn metrics shared by eval and training (namespaced keys).

Per-turn error accumulation is the project's signature: every metric split by assistant-turn
index (``turn/<t>/...``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from agentopd.core.rows import TrainRow
from agentopd.core.types import Episode, StopReason


def on_track(ep: Episode, t: int) -> bool:
    """Is the episode still correct after assistant turn `t`?

    For an episode that reached turn t: every turn up to t passed the env's per-turn oracle
    check. For one that ended earlier: whether it succeeded.
    """
    if t < len(ep.turns):
        return all(bool(turn.oracle_ok) for turn in ep.turns[: t + 1])
    return ep.success


def per_turn_success(episodes: Sequence[Episode], max_turns: int | None = None) -> list[float]:
    """Fraction of episodes still on track after each turn t = 0 .. max_turns-1."""
    eps = [e for e in episodes if e.stop_reason != StopReason.ERROR]
    if not eps:
        return []
    horizon = max_turns or max(e.num_turns for e in eps)
    return [sum(on_track(e, t) for e in eps) / len(eps) for t in range(horizon)]


def first_divergence(ep: Episode) -> int | None:
    """Index of the first turn whose oracle check failed, or None."""
    for turn in ep.turns:
        if turn.oracle_ok is False:
            return turn.index
    return None


def summarize(episodes: Sequence[Episode], prefix: str = "eval/") -> dict[str, float]:
    """Success, tool errors, turns and stop reasons. Infrastructure errors are counted and
    excluded from the rates, never scored as failures."""
    ok = [e for e in episodes if e.stop_reason != StopReason.ERROR]
    calls = sum(e.tool_calls for e in ok)
    out: dict[str, float] = {
        f"{prefix}episodes": float(len(episodes)),
        f"{prefix}infra_errors": float(len(episodes) - len(ok)),
        f"{prefix}success": sum(e.success for e in ok) / len(ok) if ok else float("nan"),
        f"{prefix}reward": sum(e.reward for e in ok) / len(ok) if ok else float("nan"),
        f"{prefix}mean_turns": sum(e.num_turns for e in ok) / len(ok) if ok else float("nan"),
        "tool/calls_per_episode": calls / len(ok) if ok else float("nan"),
        "tool/error_rate": sum(e.tool_errors for e in ok) / calls if calls else 0.0,
    }
    for reason, n in Counter(e.stop_reason.value for e in episodes).items():
        out[f"stop/{reason}"] = n / len(episodes)
    for t, v in enumerate(per_turn_success(ok)):
        out[f"turn/{t}/on_track"] = v
    return out


def episode_turn_metrics(episodes: Sequence[Episode], rows: Sequence[TrainRow]) -> dict[str, float]:
    """Per turn t: teacher reverse KL on the student's tokens (mean of log mu - log pi_T, when
    the teacher gives logprobs), oracle-action match, tool-error rate, fraction still on track."""
    out: dict[str, float] = {}
    kl_sum: dict[int, float] = defaultdict(float)
    kl_n: dict[int, int] = defaultdict(int)
    for r in rows:
        if r.teacher_logp is None:
            continue
        for lp, tl, m, t in zip(r.old_logp, r.teacher_logp, r.loss_mask, r.turn_of):
            if m and t >= 0:
                kl_sum[t] += lp - tl
                kl_n[t] += 1
    for t in sorted(kl_n):
        out[f"turn/{t}/teacher_kl"] = kl_sum[t] / kl_n[t]
    if kl_n:
        out["teacher/reverse_kl"] = sum(kl_sum.values()) / sum(kl_n.values())
    horizon = max((e.num_turns for e in episodes), default=0)
    for t in range(horizon):
        reached = [e.turns[t] for e in episodes if e.num_turns > t]
        out[f"turn/{t}/episodes"] = float(len(reached))
        out[f"turn/{t}/oracle_match"] = sum(bool(x.oracle_ok) for x in reached) / len(reached)
        calls = sum(len(x.tool_results) for x in reached)
        errs = sum(1 for x in reached for r in x.tool_results if r.error)
        out[f"turn/{t}/tool_error_rate"] = errs / calls if calls else 0.0
        out[f"turn/{t}/on_track"] = sum(on_track(e, t) for e in episodes) / len(episodes)
    return out


def rollout_metrics(episodes: Sequence[Episode], rows: Sequence[TrainRow]) -> dict[str, float]:
    """A training step's student episodes: success, per-turn metrics, first divergence."""
    out = summarize(episodes, prefix="rollout/") | episode_turn_metrics(episodes, rows)
    div = [first_divergence(e) for e in episodes]
    out["rollout/first_divergence_mean"] = (
        sum(d for d in div if d is not None) / max(1, sum(d is not None for d in div)))
    out["rollout/never_diverged"] = sum(d is None for d in div) / len(div)
    return out


def demo_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Demonstrations (oracle or teacher episodes): how good was the data?"""
    return {k: v for k, v in summarize(episodes, prefix="demo/").items() if k.startswith("demo/")}


def eval_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Held-out episodes inside a training run: ``eval/``, ``eval_turn/``, ``eval_tool/``, ``eval_stop/``."""
    renamed = {"turn/": "eval_turn/", "tool/": "eval_tool/", "stop/": "eval_stop/"}
    out: dict[str, float] = {}
    for k, v in summarize(episodes, prefix="eval/").items():
        head = k[: k.index("/") + 1]
        if head == "eval/" or head in renamed:
            out[renamed.get(head, head) + k[len(head):]] = v
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with `n` samples of which `c` succeeded (Chen et al. 2021,
    "Evaluating Large Language Models Trained on Code"): the chance that at least one of k samples
    drawn without replacement from the n succeeds, 1 - C(n-c, k) / C(n, k), computed stably as
    1 - prod_{i=n-c+1}^{n} (1 - k/i)."""
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples of a task, got n={n}")
    if n - c < k:  # every k-subset holds a success
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def task_counts(episodes: Sequence[Episode]) -> dict[str, tuple[int, int]]:
    """Per task (`Episode.task_id`, in first-seen order): (samples, successes). Infrastructure
    errors (``StopReason.ERROR``) are not samples: they count in neither."""
    n: dict[str, int] = defaultdict(int)
    c: dict[str, int] = defaultdict(int)
    for e in episodes:
        if e.stop_reason != StopReason.ERROR:
            n[e.task_id] += 1
            c[e.task_id] += bool(e.success)
    return {t: (n[t], c[t]) for t in n}


def pass_at_k_by_task(episodes: Sequence[Episode], k: int) -> float:
    """Mean over tasks of `pass_at_k` on `task_counts`; a task left with fewer than k samples
    (after infrastructure errors) is left out of the mean (NaN when no task has k)."""
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    scores = [pass_at_k(n, c, k) for n, c in task_counts(episodes).values() if n >= k]
    return sum(scores) / len(scores) if scores else float("nan")

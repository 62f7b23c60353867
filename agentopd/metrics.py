"""Episode-level metrics shared by eval and training (namespaced keys)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from agentopd.types import Episode, StopReason


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
